//! The `alluxiofs-worker` binary as users run it: flags, ready file,
//! SIGTERM, exit statuses.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_alluxiofs-worker");

fn wait_for(path: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn serves_until_sigterm_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello.txt"), b"hello from the UFS").unwrap();
    let ready = dir.path().join("run/ready.json");
    let yaml = dir.path().join("worker.yaml");
    std::fs::write(&yaml, "page_size: 64KiB\nmetadata_ttl: 0\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--mount"])
        .arg(&data)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--ready-file")
        .arg(&ready)
        .arg("--config")
        .arg(&yaml)
        .env("ALLUXIOFS_WORKER_PAGE_SIZE", "128KiB")
        .env("ALLUXIOFS_WORKER_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(&ready, Duration::from_secs(20)), "no ready file");
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    assert_eq!(info["pid"], child.id());
    let port = info["port"].as_u64().unwrap();
    assert!(port > 0);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let (health, body) = rt.block_on(async {
        let c = reqwest::Client::new();
        let h = c
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let h: serde_json::Value = serde_json::from_slice(&h).unwrap();
        let url = format!("file://{}/hello.txt", data.display());
        let id = alluxiofs_core::path::path_id(&url);
        let q: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
        let body = c
            .get(format!("{base}/v1/range/{id}?ufsFullPath={q}&offset=6"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        (h, body)
    });
    assert_eq!(health["status"], "ok");
    assert_eq!(health["page_size"], 128 * 1024, "env beats the YAML file");
    assert_eq!(&body[..], b"from the UFS");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(!ready.exists(), "ready file removed on shutdown");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let listening = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| v["fields"]["message"] == format!("listening on {base}"));
    assert!(listening, "no JSON 'listening on' line in:\n{log}");
}

#[test]
fn bad_command_lines_fail_with_a_clear_message() {
    let no_mount = Command::new(BIN)
        .env_remove("ALLUXIOFS_WORKER_MOUNTS")
        .env_remove("ALLUXIOFS_WORKER_CONFIG")
        .output()
        .unwrap();
    assert_eq!(no_mount.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_mount.stderr).contains("--mount"));

    let bad_flag = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(bad_flag.status.code(), Some(2));

    let bad_size = Command::new(BIN)
        .args(["--mount", "/tmp", "--capacity", "lots"])
        .output()
        .unwrap();
    assert_eq!(bad_size.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_size.stderr).contains("invalid size"));

    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--mount",
        "--cache-dir",
        "--capacity",
        "--memory-capacity",
        "--page-size",
        "--metadata-ttl",
        "--ufs-option",
        "--auth-token-file",
        "--ready-file",
        "--config",
        "--log-format",
        "--log-level",
        "--etcd",
        "--cluster-name",
        "--worker-id",
        "--etcd-lease-ttl",
        "--etcd-username",
        "--etcd-password",
        "--etcd-password-file",
        "--advertise-host",
        "--placement",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn run_cli_returns_ok_for_help_and_errors_otherwise() {
    assert!(alluxiofs_worker::run_cli(["alluxiofs-worker", "--version"]).is_ok());
    let err = alluxiofs_worker::run_cli(["alluxiofs-worker", "--mount", "ftp://x/y"])
        .expect_err("unsupported scheme");
    assert!(err.to_string().contains("unsupported scheme"), "{err}");
}

/// A worker on `file:///` (no bucket name to derive) still starts under the
/// default `s3_port: auto`, without the endpoint and saying why; asking for
/// the endpoint on a port makes the same mount a start error.
#[test]
fn a_mount_without_a_bucket_name_turns_off_only_an_automatic_s3_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--mount", "/", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .arg("--ready-file")
        .arg(&ready)
        .env_remove("ALLUXIOFS_WORKER_S3_PORT")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = wait_for(&ready, Duration::from_secs(20));
    let info: Option<serde_json::Value> = std::fs::read(&ready)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(started, "the worker did not start:\n{log}");
    assert!(status.success(), "exit status {status}:\n{log}");
    assert_eq!(info.unwrap()["s3_port"], serde_json::Value::Null);
    assert!(
        log.contains("S3 endpoint off") && log.contains("s3_buckets"),
        "no reason for the endpoint being off in:\n{log}"
    );

    let explicit = Command::new(BIN)
        .args([
            "--port",
            "0",
            "--s3-port",
            "0",
            "--mount",
            "/",
            "--cache-dir",
        ])
        .arg(dir.path().join("cache2"))
        .output()
        .unwrap();
    assert_eq!(explicit.status.code(), Some(1));
    let err = String::from_utf8_lossy(&explicit.stderr);
    assert!(err.contains("name it in s3_buckets"), "{err}");
}
