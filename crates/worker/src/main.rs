//! `alluxiofs-worker`: the standalone cache worker binary.

fn main() {
    match alluxiofs_worker::run_cli(std::env::args_os()) {
        Ok(()) => {}
        Err(alluxiofs_worker::WorkerError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("alluxiofs-worker: {e}");
            std::process::exit(1);
        }
    }
}
