//! Progress bars on a terminal (stderr), fed by the counters of a running job.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::ingest::{self, Progress};

pub struct Bar {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Bar {
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(p: Arc<Progress>, verb: &'static str) -> Bar {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        while !s.load(Ordering::Relaxed) {
            let files = p.files.load(Ordering::Relaxed);
            let total_files = p.total_files.load(Ordering::Relaxed);
            let bytes = p.bytes.load(Ordering::Relaxed);
            let total = p.total_bytes.load(Ordering::Relaxed).max(bytes);
            bar.set_length(total);
            bar.set_position(bytes);
            let of = if total_files > 0 {
                format!("/{total_files}")
            } else {
                String::new()
            };
            bar.set_message(format!("{verb} {files}{of} files"));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    });
    Bar {
        stop,
        thread: Some(thread),
    }
}

/// Progress of a backup, with totals from a scan running on its own thread.
pub fn start_backup(p: Arc<Progress>, dir: PathBuf) -> Bar {
    let q = p.clone();
    std::thread::spawn(move || {
        // One thread of its own: the scan must not take cores from the backup.
        if let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(1).build() {
            match ingest::PlainDir::open(&dir, Vec::new()) {
                Ok(d) => pool.install(|| ingest::scan(&d, &q)),
                Err(_) => q
                    .scan_done
                    .store(true, std::sync::atomic::Ordering::Relaxed),
            }
        }
    });
    run(p, "backup")
}

pub fn start_restore(p: Arc<Progress>) -> Bar {
    run(p, "restore")
}
