//! The events file: one JSON object per line, appended by a dedicated thread.
//!
//! Before each line the writer checks the path still names the file it holds open (so
//! logrotate's `create` mode and a deleted file are followed) and, with a size limit, renames
//! the file to `PATH.1` once the next line would take it past the limit. The size is read from
//! the open file each time, so `copytruncate` works as well.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use tokio::sync::oneshot;

use super::{Counters, DropReason, EventsError, Sink, ViolationEvent};

/// Lines waiting for the writer thread before new ones are dropped.
const QUEUE: usize = 10_000;

enum Message {
    Line(super::EventKind, String),
    Flush(oneshot::Sender<()>),
}

/// Handle of the writer thread.
pub(super) struct FileSink {
    tx: SyncSender<Message>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink").finish_non_exhaustive()
    }
}

impl FileSink {
    /// Opens `path` for appending and starts the writer thread.
    pub(super) fn start(
        path: PathBuf,
        max_size: u64,
        counters: Arc<Counters>,
    ) -> Result<Self, EventsError> {
        let writer = Writer::open(path, max_size)?;
        tracing::info!(path = %writer.path.display(), max_size, "writing violation events to a file");
        let (tx, rx) = sync_channel(QUEUE);
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("events-file".into())
            .spawn(move || writer.run(rx, &thread_counters))
            .map_err(EventsError::Thread)?;
        Ok(Self { tx, counters })
    }

    /// Queues `event`; a full queue drops it and counts the drop.
    pub(super) fn send(&self, event: &ViolationEvent) {
        let line = match serde_json::to_string(event) {
            Ok(mut line) => {
                line.push('\n');
                line
            }
            Err(e) => {
                tracing::warn!(error = %e, "encoding an event for the events file failed");
                self.counters.dropped(Sink::File, DropReason::WriteError, 1);
                return;
            }
        };
        match self.tx.try_send(Message::Line(event.kind, line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.dropped(Sink::File, DropReason::QueueFull, 1);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped(Sink::File, DropReason::Shutdown, 1);
            }
        }
    }

    /// Waits until every line queued before the call is written.
    pub(super) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        let tx = self.tx.clone();
        // `send` blocks while the queue is full, so it runs off the async workers.
        let queued = tokio::task::spawn_blocking(move || tx.send(Message::Flush(done)).is_ok())
            .await
            .unwrap_or(false);
        if queued {
            let _ = wait.await;
        }
    }
}

struct Writer {
    path: PathBuf,
    rotated: PathBuf,
    max_size: u64,
    file: Option<File>,
}

impl Writer {
    fn open(path: PathBuf, max_size: u64) -> Result<Self, EventsError> {
        let file = open_append(&path).map_err(|source| EventsError::OpenFile {
            path: path.clone(),
            source,
        })?;
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        Ok(Self {
            path,
            rotated: rotated.into(),
            max_size,
            file: Some(file),
        })
    }

    fn run(mut self, rx: Receiver<Message>, counters: &Counters) {
        let mut failing = false;
        for message in rx {
            match message {
                Message::Line(kind, line) => match self.write(line.as_bytes()) {
                    Ok(()) => {
                        if failing {
                            tracing::info!(path = %self.path.display(), "writing the events file works again");
                            failing = false;
                        }
                        counters.delivered(Sink::File, kind);
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(path = %self.path.display(), error = %e, "writing the events file failed");
                            failing = true;
                        }
                        // Start over with a fresh handle next time.
                        self.file = None;
                        counters.dropped(Sink::File, DropReason::WriteError, 1);
                    }
                },
                Message::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        if !self.still_current() {
            self.file = Some(open_append(&self.path)?);
        }
        let size = match &self.file {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        if self.max_size > 0 && size > 0 && size + line.len() as u64 > self.max_size {
            std::fs::rename(&self.path, &self.rotated)?;
            tracing::debug!(path = %self.path.display(), size, "rotated the events file");
            self.file = Some(open_append(&self.path)?);
        }
        match &mut self.file {
            Some(f) => f.write_all(line),
            None => Err(io::Error::other("events file is not open")),
        }
    }

    /// Whether the open handle is still the file at `path`.
    fn still_current(&self) -> bool {
        let Some(file) = &self.file else {
            return false;
        };
        match (file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(open), Ok(on_disk)) => open.dev() == on_disk.dev() && open.ino() == on_disk.ino(),
            _ => false,
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::super::tests::event;
    use super::super::{EventHub, EventKind, EventsArgs};
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dockwatch-events-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn lines(path: &Path) -> Vec<ViolationEvent> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn appends_json_lines_to_an_existing_file() {
        let dir = tempdir("append");
        let path = dir.join("events.jsonl");
        std::fs::write(&path, "{\"kept\":true}\n").unwrap();
        let hub = EventHub::new(&EventsArgs {
            file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        hub.publish(event(EventKind::ViolationStarted, "a", 1.0));
        hub.publish(event(EventKind::ViolationEnded, "a", 2.0));
        hub.flush().await;

        let text = std::fs::read_to_string(&path).unwrap();
        let all: Vec<&str> = text.lines().collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], "{\"kept\":true}");
        let second: ViolationEvent = serde_json::from_str(all[1]).unwrap();
        assert_eq!(second, event(EventKind::ViolationStarted, "a", 1.0));
        let third: serde_json::Value = serde_json::from_str(all[2]).unwrap();
        assert_eq!(third["kind"], "violation_ended");
        assert_eq!(third["severity"], "CRITICAL");
        assert_eq!(third["mode"], "enforce");
        assert_eq!(
            hub.inner
                .counters
                .get_delivered(Sink::File, EventKind::ViolationStarted),
            1
        );
        assert_eq!(
            hub.inner
                .counters
                .get_delivered(Sink::File, EventKind::ViolationEnded),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn rotates_into_one_old_file() {
        let dir = tempdir("rotate");
        let path = dir.join("events.jsonl");
        let one = serde_json::to_string(&event(EventKind::ViolationStarted, "a", 1.0)).unwrap();
        let line_len = one.len() as u64 + 1;
        // Room for three lines per file.
        let hub = EventHub::new(&EventsArgs {
            file: Some(path.clone()),
            file_max_size: line_len * 3 + 5,
            ..Default::default()
        })
        .unwrap();
        for i in 0..8 {
            hub.publish(event(EventKind::ViolationStarted, "a", f64::from(i)));
        }
        hub.flush().await;

        let old = lines(&dir.join("events.jsonl.1"));
        let current = lines(&path);
        // 0,1,2 went to the first file, 3,4,5 to the second (now .1), 6,7 to the current one;
        // the first file was overwritten by the second rotation.
        let ts = |v: &[ViolationEvent]| v.iter().map(|e| e.timestamp).collect::<Vec<_>>();
        assert_eq!(ts(&old), vec![3.0, 4.0, 5.0]);
        assert_eq!(ts(&current), vec![6.0, 7.0]);
        assert!(std::fs::metadata(&path).unwrap().len() <= line_len * 3 + 5);
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, 2, "only the current and one old file are kept");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn follows_a_file_moved_away_by_logrotate() {
        let dir = tempdir("moved");
        let path = dir.join("events.jsonl");
        let hub = EventHub::new(&EventsArgs {
            file: Some(path.clone()),
            file_max_size: 0,
            ..Default::default()
        })
        .unwrap();
        hub.publish(event(EventKind::ViolationStarted, "a", 1.0));
        hub.flush().await;
        std::fs::rename(&path, dir.join("events.jsonl-20260101")).unwrap();
        hub.publish(event(EventKind::ViolationStarted, "a", 2.0));
        hub.flush().await;
        assert_eq!(lines(&path).len(), 1);
        assert_eq!(lines(&path)[0].timestamp, 2.0);
        assert_eq!(lines(&dir.join("events.jsonl-20260101"))[0].timestamp, 1.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unwritable_path_fails_at_start() {
        let err = EventHub::new(&EventsArgs {
            file: Some("/nonexistent-dir/events.jsonl".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "opening events file /nonexistent-dir/events.jsonl"
        );
    }
}
