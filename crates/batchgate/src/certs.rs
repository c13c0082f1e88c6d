//! `batchgate certs`: a throwaway CA, a server and a client certificate, for tests and local
//! runs of TLS and mTLS (docs/security.md). Not for production.

use std::path::PathBuf;

use batchgate_net::DevCerts;
use clap::Args;

/// Flags of `batchgate certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`,
    /// `client.pem` and `client-key.pem` into (created if missing; existing files are
    /// replaced).
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,

    /// A name the server certificate is valid for, besides localhost, 127.0.0.1 and ::1
    /// (a DNS name or an IP address); repeat for several.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,

    /// Common name of the client certificate (e.g. the batcher's name).
    #[arg(long, default_value = "batchgate-batcher")]
    pub client_name: String,
}

/// Generates and writes the files; returns a summary for the terminal.
pub fn run(args: &CertsArgs) -> anyhow::Result<String> {
    let files = DevCerts::generate(&args.hosts, &args.client_name)?.write(&args.out)?;
    Ok(format!(
        "CA:          {}\n\
         server:      --tls-cert {} --tls-key {}\n\
         client:      --client-cert {} --client-key {}\n\
         trust:       --worker-ca {} (batcher), --client-ca {} (worker)\n\
         (throwaway certificates for tests and local runs; the CA key is {})",
        files.ca_cert.display(),
        files.server_cert.display(),
        files.server_key.display(),
        files.client_cert.display(),
        files.client_key.display(),
        files.ca_cert.display(),
        files.ca_cert.display(),
        files.ca_key.display(),
    ))
}
