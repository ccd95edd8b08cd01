//! Runs an example binary of this crate as a child process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running example that printed `listening on http://<addr>`.
pub struct RunningExample {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything printed before the `listening on` line.
    pub printed: Vec<String>,
}

impl RunningExample {
    /// The `export NAME=value` lines it printed.
    pub fn exports(&self) -> HashMap<String, String> {
        self.printed
            .iter()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|assignment| {
                let (name, rest) = assignment.split_once('=')?;
                let value = rest.split_whitespace().next()?;
                Some((name.to_owned(), value.to_owned()))
            })
            .collect()
    }

    /// Stops the example (like Ctrl-C would, but without waiting).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The path of a built example: cargo puts them beside the test binaries'
/// `deps` folder. Built (a no-op when fresh) so that a focused
/// `cargo test --test …` never runs a stale binary.
pub fn example_binary(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--profile", profile, "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build --example");
    assert!(status.success(), "building example {name} failed");
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

/// Starts example `name` on a free loopback port with extra environment
/// variables, and waits until it listens.
pub async fn start_example(name: &str, env: &[(&str, &str)]) -> RunningExample {
    let mut command = Command::new(example_binary(name));
    command
        .env("KEYAUTH_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("start the example");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let wait = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                return addr.parse::<SocketAddr>().expect("an address");
            }
            printed.push(line);
        }
        panic!("the example exited before listening; it printed {printed:#?}");
    };
    let addr = tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("the example listens within 60 s");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    RunningExample {
        child,
        addr,
        printed,
    }
}

/// Runs example `name` until it prints a line starting with `last`, then
/// stops it; returns every line it printed.
pub async fn output_until(name: &str, env: &[(&str, &str)], last: &str) -> Vec<String> {
    let mut child = Command::new(example_binary(name))
        .env("KEYAUTH_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut printed = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let done = line.starts_with(last);
            printed.push(line);
            if done {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the example prints its last line within 60 s");
    let _ = child.kill().await;
    printed
}

/// How an example that was expected to stop on its own ended.
#[derive(Debug)]
pub struct Exited {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From start to exit.
    pub took: Duration,
}

/// Runs example `name` in `dir` with the default log filter and the given
/// environment until it exits; panics if it is still running after
/// `limit`.
pub async fn run_until_exit(
    name: &str,
    dir: &std::path::Path,
    env: &[(&str, &str)],
    limit: Duration,
) -> Exited {
    let binary = example_binary(name);
    let started = std::time::Instant::now();
    let child = Command::new(binary)
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("KEYAUTH_ADDR")
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example");
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("example {name} with {env:?} still runs after {limit:?}"))
        .expect("the example's output");
    Exited {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    }
}
