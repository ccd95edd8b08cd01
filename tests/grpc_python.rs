//! A client in another language, generated from `examples/grpc/demo.proto`
//! alone, calls the grpc example over a real socket: `tests/grpc_client.py`
//! (Python, grpcio) run by the interpreter that `KEYAUTH_TEST_GRPC_PYTHON`
//! names (CI makes a venv with grpcio and grpcio-tools for it).
//!
//! A custom harness (libtest-mimic) so that a machine without that
//! variable shows the skip in `cargo test`'s own summary, as
//! `test [needs KEYAUTH_TEST_GRPC_PYTHON] … ignored`, instead of a pass.
//! With the variable set, a missing interpreter or grpcio is a failure.

mod common;

use std::process::Stdio;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use tower_keyauth::KeyFormat;

const PYTHON_VAR: &str = "KEYAUTH_TEST_GRPC_PYTHON";

fn main() {
    let args = Arguments::from_args();
    let python = std::env::var_os(PYTHON_VAR);
    let mut trial = Trial::test(
        "a_python_client_generated_from_demo_proto_gets_each_status",
        {
            let python = python.clone();
            move || {
                // Reached without the variable only through `--ignored`.
                let python =
                    python.ok_or_else(|| Failed::from(format!("{PYTHON_VAR} is unset")))?;
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| Failed::from(format!("a tokio runtime: {e}")))?
                    .block_on(python_client_gets_each_status(python))
            }
        },
    );
    if python.is_none() {
        trial = trial
            .with_ignored_flag(true)
            .with_kind(format!("needs {PYTHON_VAR}"));
    }
    libtest_mimic::run(&args, vec![trial]).exit();
}

async fn python_client_gets_each_status(python: std::ffi::OsString) -> Result<(), Failed> {
    // The example on a free port (KEYAUTH_ADDR=127.0.0.1:0), keys read
    // from the `export` lines it prints, as a user would paste them.
    let example = common::example::start_example("grpc", &[]).await;
    let exports = example.exports();
    let export = |name: &str| {
        exports
            .get(name)
            .cloned()
            .ok_or_else(|| Failed::from(format!("the example printed no `export {name}=`")))
    };
    let org_key = export("ORG_KEY")?;
    // The expected key id comes from the token, parsed by this crate, not
    // from anything the server answers.
    let org_key_id = KeyFormat::default()
        .parse(&org_key)
        .ok()
        .and_then(|parsed| parsed.key_id())
        .ok_or_else(|| Failed::from(format!("ORG_KEY {org_key:?} is not a prefixed key")))?;

    let addr = example.addr;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_client.py");
    let run = tokio::process::Command::new(&python)
        .arg(script)
        .arg(addr.to_string())
        .env("ORG_KEY", &org_key)
        .env("ORG_KEY_ID", org_key_id.to_string())
        .env("READ_KEY", export("READ_KEY")?)
        .env("PAT", export("PAT")?)
        .env("ORG_ID", export("ORG_ID")?)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run).await;
    example.stop().await;
    let output = output
        .map_err(|_| Failed::from("the Python client did not finish within 120 s"))?
        .map_err(|e| Failed::from(format!("cannot run {PYTHON_VAR}={python:?}: {e}")))?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(Failed::from(format!(
            "{python:?} tests/grpc_client.py {} exited with {}:\n{printed}",
            addr, output.status
        )));
    }
    println!("{printed}");
    Ok(())
}
