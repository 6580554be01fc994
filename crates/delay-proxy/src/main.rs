//! `alluxiofs-delay-proxy --listen ADDR --target ADDR [--rtt-ms N] [--ready-file P] [--stats-file P] [--log-requests] [--fault MODE[:P]] [--control-file P]`
//!
//! Forwards TCP connections from `--listen` to `--target`, adding `--rtt-ms`
//! (default 10) to every round trip. Prints `listening on ADDR` once bound
//! (port 0 picks a free port) and writes `{"addr": ...}` to `--ready-file`;
//! keeps the counters as JSON in `--stats-file`, rewritten every 100 ms;
//! `--log-requests` prints every HTTP request line (with its `Range`) on stderr.
//!
//! Faults (see the library's design note): `--fault MODE[:P]` starts with
//! one (`pass`, `slowdown`, `unavailable`, `reset`, `cut`; P the probability
//! per HTTP request, default 1). `--control-file P` is read every 50 ms
//! while the proxy runs: a line `MODE [P]` sets the faults from then on
//! (write it to a temporary file and rename it over P); a missing file
//! changes nothing, a bad line is reported once and ignored. Each change is
//! printed on stderr (`faults: MODE P`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alluxiofs_delay_proxy::{serve, Config, FaultSetting, Faults, Stats};

const USAGE: &str = "usage: alluxiofs-delay-proxy --listen ADDR --target ADDR [--rtt-ms N] \
                     [--ready-file PATH] [--stats-file PATH] [--log-requests] \
                     [--fault MODE[:P]] [--control-file PATH]";

struct Args {
    listen: SocketAddr,
    target: SocketAddr,
    rtt_ms: f64,
    ready_file: Option<PathBuf>,
    stats_file: Option<PathBuf>,
    log_requests: bool,
    fault: FaultSetting,
    control_file: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut target = None;
    let mut rtt_ms: f64 = 10.0;
    let mut ready_file = None;
    let mut stats_file = None;
    let mut log_requests = false;
    let mut fault = FaultSetting::PASS;
    let mut control_file = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_string());
        }
        if flag == "--log-requests" {
            log_requests = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|e| bad(&e))?),
            "--target" => target = Some(value.parse().map_err(|e| bad(&e))?),
            "--rtt-ms" => rtt_ms = value.parse().map_err(|e| bad(&e))?,
            "--ready-file" => ready_file = Some(PathBuf::from(value)),
            "--stats-file" => stats_file = Some(PathBuf::from(value)),
            "--fault" => fault = value.parse().map_err(|e| bad(&e))?,
            "--control-file" => control_file = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if !(rtt_ms >= 0.0 && rtt_ms.is_finite()) {
        return Err(format!("--rtt-ms must be >= 0, got {rtt_ms}"));
    }
    Ok(Args {
        listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
        target: target.ok_or_else(|| format!("--target is required\n{USAGE}"))?,
        rtt_ms,
        ready_file,
        stats_file,
        log_requests,
        fault,
        control_file,
    })
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().expect("bound socket has an address");
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Faults::default());
    faults.set(args.fault);
    if args.fault != FaultSetting::PASS {
        eprintln!("faults: {}", args.fault);
    }
    if let Some(path) = args.control_file.clone() {
        tokio::spawn(watch_control_file(path, faults.clone()));
    }
    if let Some(path) = &args.stats_file {
        let (path, stats) = (path.clone(), stats.clone());
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                let now = stats.to_json();
                if now != last {
                    let tmp = path.with_extension("tmp");
                    if std::fs::write(&tmp, &now).is_ok() {
                        let _ = std::fs::rename(&tmp, &path);
                    }
                    last = now;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    if let Some(path) = &args.ready_file {
        if let Err(e) = std::fs::write(path, format!("{{\"addr\":\"{addr}\"}}")) {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    println!(
        "listening on {addr}, forwarding to {} with {} ms round trip",
        args.target, args.rtt_ms
    );
    let config = Config {
        target: args.target,
        rtt: Duration::from_secs_f64(args.rtt_ms / 1000.0),
        log_requests: args.log_requests,
        faults: faults.clone(),
    };
    if let Err(e) = serve(listener, config, stats).await {
        eprintln!("accept failed: {e}");
        std::process::exit(1);
    }
}

/// Apply the setting in `path` whenever its content changes.
async fn watch_control_file(path: PathBuf, faults: Arc<Faults>) {
    let mut last: Option<String> = None;
    loop {
        if let Ok(text) = tokio::fs::read_to_string(&path).await {
            if last.as_deref() != Some(text.as_str()) {
                match text.parse::<FaultSetting>() {
                    Ok(setting) => {
                        faults.set(setting);
                        eprintln!("faults: {setting}");
                    }
                    Err(e) => eprintln!("{}: {e} (faults unchanged)", path.display()),
                }
                last = Some(text);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
