//! The deployment files checked against the Kubernetes schemas and against this binary:
//! `scripts/check-deploy.py` validates every manifest of `deploy/k8s` offline
//! (`kubernetes-validate --strict`; the CRDs it has no schema for — Kustomization, KEDA's
//! ScaledObject, the Prometheus Operator's ServiceMonitor — are checked for what they point
//! at instead), checks that every flag and `BATCHGATE_*` variable the manifests and
//! `deploy/compose/compose.yaml` give a container exists in that subcommand's `--help`, that
//! each termination grace period covers the shutdown sequence, and that the Grafana dashboard
//! is generated and filters on its variables.
//!
//! `scripts/test.sh` installs kubernetes-validate in a virtual environment and names it in
//! `BATCHGATE_DEPLOY_VENV`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn deployment_files_validate_and_use_only_flags_that_exist() {
    let Some(venv) = std::env::var_os("BATCHGATE_DEPLOY_VENV") else {
        // A missing validator fails the run, unless whoever runs it says by hand that it may
        // be missing (scripts/test.sh never does; CI refuses to run with the variable set).
        assert!(
            std::env::var_os("BATCHGATE_ALLOW_NO_KUBERNETES_VALIDATE").is_some_and(|v| v == "1"),
            "BATCHGATE_DEPLOY_VENV is not set: run scripts/test.sh (it installs \
             kubernetes-validate), or set BATCHGATE_ALLOW_NO_KUBERNETES_VALIDATE=1 to run \
             without this test"
        );
        eprintln!("NOT RUN: deployment files test — no kubernetes-validate");
        return;
    };
    let venv = PathBuf::from(venv);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(venv.join("bin/python"))
        .arg(root.join("scripts/check-deploy.py"))
        .arg(env!("CARGO_BIN_EXE_batchgate"))
        .arg(venv.join("bin/kubernetes-validate"))
        .output()
        .expect("run scripts/check-deploy.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "deployment files fail their checks");
    assert!(
        stdout.contains("resources passed") && stdout.contains(" 0 failed"),
        "the checks did not run: {stdout}"
    );
}
