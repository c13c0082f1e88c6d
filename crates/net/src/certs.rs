//! [`DevCerts`]: a throwaway certificate authority with one server and one client
//! certificate, for tests and local runs. Not for production: the CA key is written next to
//! the certificates, and the certificates never expire in practice.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::TlsError;

/// Names the server certificate is always valid for, besides those asked for.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// PEM texts of a CA, a server certificate it signed and a client certificate it signed.
#[derive(Clone)]
pub struct DevCerts {
    /// The CA certificate: what clients trust, and what a server checks client certificates
    /// against.
    pub ca_cert: String,
    /// The CA's private key (kept so more certificates can be signed by hand).
    pub ca_key: String,
    /// The server certificate (for `--tls-cert`).
    pub server_cert: String,
    /// Its key (for `--tls-key`).
    pub server_key: String,
    /// The client certificate (for `--client-cert`).
    pub client_cert: String,
    /// Its key (for `--client-key`).
    pub client_key: String,
}

impl std::fmt::Debug for DevCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCerts").finish_non_exhaustive()
    }
}

/// The files [`DevCerts::write`] makes, by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCertFiles {
    /// `ca.pem`
    pub ca_cert: PathBuf,
    /// `ca-key.pem`
    pub ca_key: PathBuf,
    /// `server.pem`
    pub server_cert: PathBuf,
    /// `server-key.pem`
    pub server_key: PathBuf,
    /// `client.pem`
    pub client_cert: PathBuf,
    /// `client-key.pem`
    pub client_key: PathBuf,
}

impl DevCerts {
    /// A fresh CA; a server certificate for `hosts` plus [`LOOPBACK_NAMES`]; a client
    /// certificate with common name `client_name`. Names that parse as IP addresses become
    /// IP-address names.
    pub fn generate(hosts: &[String], client_name: &str) -> Result<Self, TlsError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "batchgate development CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_key_pem = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

        let mut names: Vec<String> = LOOPBACK_NAMES.iter().map(|s| (*s).to_owned()).collect();
        for host in hosts {
            if !names.contains(host) {
                names.push(host.clone());
            }
        }
        let mut server = CertificateParams::new(names)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "batchgate server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = server.signed_by(&server_key, &ca)?;

        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(DnType::CommonName, client_name);
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        let client_cert = client.signed_by(&client_key, &ca)?;

        Ok(DevCerts {
            ca_cert: ca.pem(),
            ca_key: ca_key_pem,
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        })
    }

    /// Writes the six PEM files into `dir` (created if missing); keys are readable by the
    /// owner only.
    pub fn write(&self, dir: &Path) -> Result<DevCertFiles, TlsError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Read { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let files = DevCertFiles {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        };
        for (path, text, secret) in [
            (&files.ca_cert, &self.ca_cert, false),
            (&files.ca_key, &self.ca_key, true),
            (&files.server_cert, &self.server_cert, false),
            (&files.server_key, &self.server_key, true),
            (&files.client_cert, &self.client_cert, false),
            (&files.client_key, &self.client_key, true),
        ] {
            write_file(path, text, secret).map_err(io(path))?;
        }
        Ok(files)
    }
}

fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Write beside and rename, so a server reloading on change never reads half a file.
    let partial = path.with_extension("pem.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&partial)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}
