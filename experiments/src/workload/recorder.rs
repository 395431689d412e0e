//! The history writer: operations and observations stream to disk as they complete.
//!
//! One dedicated thread owns both files. Operations reach it through a bounded channel (so a
//! slow disk slows the load down rather than growing memory), observations through an
//! unbounded one (they are few, and an engine may record them from any thread without a
//! runtime). The thread also keeps the counters behind the live progress line and the summary,
//! so nothing else contends for them. Files are flushed at least every 200 ms and synced when
//! the recorder is closed, so a killed run loses at most the last fraction of a second and
//! leaves at worst a truncated last line, which readers tolerate.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::history::{
    HistoryHeader, Observation, Operation, HISTORY_FORMAT, HISTORY_FORMAT_VERSION,
    OBSERVATIONS_FORMAT,
};

use super::config::Tier;
use super::stats::Totals;
use super::WorkloadError;

const FLUSH_EVERY: Duration = Duration::from_millis(200);
const OP_QUEUE: usize = 16_384;
/// Most operations written per wake-up.
const BATCH: usize = 1024;

enum Message {
    Op {
        op: Box<Operation>,
        tier: Tier,
        read_back: bool,
    },
    DuplicateAck,
    Snapshot(oneshot::Sender<Totals>),
}

struct Shared {
    failed: AtomicBool,
    error: Mutex<Option<String>>,
    totals: Mutex<Totals>,
}

/// A handle for recording operations; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    ops: mpsc::Sender<Message>,
    observations: ObservationSink,
    shared: Arc<Shared>,
}

/// A handle for recording observations from anywhere (any thread, with or without a runtime);
/// cheap to clone. Records sent after the recorder closed are dropped.
#[derive(Clone)]
pub struct ObservationSink {
    tx: mpsc::UnboundedSender<Observation>,
}

impl ObservationSink {
    /// Records one observation.
    pub fn record(&self, observation: Observation) {
        let _ = self.tx.send(observation);
    }
}

/// The files written and what was counted, once the recorder has closed.
#[derive(Debug)]
pub struct Closed {
    /// Final counters.
    pub totals: Totals,
    /// History file.
    pub history: PathBuf,
    /// Observations file.
    pub observations: PathBuf,
}

/// The writer thread and its files.
pub struct RecorderThread {
    handle: Option<JoinHandle<Result<Totals, String>>>,
    close: Option<oneshot::Sender<()>>,
    history: PathBuf,
    observations: PathBuf,
}

fn create(what: &'static str, path: &Path) -> Result<BufWriter<File>, WorkloadError> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            return Err(WorkloadError::Output {
                what,
                path: path.to_path_buf(),
                error: io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("directory {} does not exist", parent.display()),
                ),
            });
        }
    }
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|error| WorkloadError::Output {
            what,
            path: path.to_path_buf(),
            error,
        })?;
    Ok(BufWriter::with_capacity(256 * 1024, file))
}

/// Checks that `path` can be created and written, without leaving it behind if it did not
/// exist. For early, clear errors before anything else starts.
pub fn check_writable(what: &'static str, path: &Path) -> Result<(), WorkloadError> {
    let existed = path.exists();
    drop(create(what, path)?);
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

impl Recorder {
    /// Creates both files, writes their headers and starts the writer thread.
    pub fn open(
        history: &Path,
        observations: &Path,
        header: &HistoryHeader,
    ) -> Result<(Recorder, RecorderThread), WorkloadError> {
        let mut history_out = create("history", history)?;
        let mut observations_out = create("observations", observations)?;
        let write_err = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |error| WorkloadError::Output { what, path, error }
        };
        write_line(&mut history_out, header).map_err(write_err("history", history))?;
        write_line(
            &mut observations_out,
            &Observation::Header {
                format: OBSERVATIONS_FORMAT.to_owned(),
                version: HISTORY_FORMAT_VERSION,
                run_id: header.run_id.clone(),
            },
        )
        .map_err(write_err("observations", observations))?;
        history_out.flush().map_err(write_err("history", history))?;
        observations_out
            .flush()
            .map_err(write_err("observations", observations))?;
        debug_assert_eq!(header.format, HISTORY_FORMAT);

        let (ops_tx, ops_rx) = mpsc::channel(OP_QUEUE);
        let (obs_tx, obs_rx) = mpsc::unbounded_channel();
        let (close_tx, close_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            totals: Mutex::new(Totals {
                history_lines: 1,
                observation_lines: 1,
                ..Totals::default()
            }),
        });
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("history-writer".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .map_err(|e| format!("cannot start the history writer: {e}"))?;
                runtime.block_on(writer_loop(
                    Files {
                        history: history_out,
                        observations: observations_out,
                    },
                    ops_rx,
                    obs_rx,
                    close_rx,
                    &thread_shared,
                ))
            })
            .map_err(|error| WorkloadError::Output {
                what: "history",
                path: history.to_path_buf(),
                error,
            })?;
        Ok((
            Recorder {
                ops: ops_tx,
                observations: ObservationSink { tx: obs_tx },
                shared,
            },
            RecorderThread {
                handle: Some(handle),
                close: Some(close_tx),
                history: history.to_path_buf(),
                observations: observations.to_path_buf(),
            },
        ))
    }

    /// Records one completed operation of a tenant of `tier`.
    pub async fn op(&self, op: Operation, tier: Tier) {
        let _ = self
            .ops
            .send(Message::Op {
                op: Box::new(op),
                tier,
                read_back: false,
            })
            .await;
    }

    /// Records one final read-back operation.
    pub async fn read_back(&self, op: Operation, tier: Tier) {
        let _ = self
            .ops
            .send(Message::Op {
                op: Box::new(op),
                tier,
                read_back: true,
            })
            .await;
    }

    /// Counts a write acknowledged as a duplicate.
    pub async fn duplicate_ack(&self) {
        let _ = self.ops.send(Message::DuplicateAck).await;
    }

    /// The observations handle.
    pub fn observations(&self) -> ObservationSink {
        self.observations.clone()
    }

    /// Records one observation.
    pub fn observe(&self, observation: Observation) {
        self.observations.record(observation);
    }

    /// The counters after every operation sent so far has been counted.
    pub async fn snapshot(&self) -> Totals {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(Message::Snapshot(tx)).await.is_err() {
            return self.shared.totals.lock().expect("totals").clone();
        }
        rx.await.unwrap_or_default()
    }

    /// The counters as they are now (for the progress line); resets the progress window.
    pub fn take_window(&self) -> Totals {
        let mut totals = self.shared.totals.lock().expect("totals");
        let snapshot = totals.clone();
        totals.window = super::stats::Window::default();
        snapshot
    }

    /// Why writing failed, if it did; the run must stop then, since the history is incomplete.
    pub fn failure(&self) -> Option<String> {
        if self.shared.failed.load(Ordering::Relaxed) {
            self.shared.error.lock().expect("error").clone()
        } else {
            None
        }
    }
}

impl RecorderThread {
    /// Flushes and syncs both files and stops the thread. Call after every task that records
    /// has finished.
    pub fn close(mut self) -> Result<Closed, WorkloadError> {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        let result = self
            .handle
            .take()
            .expect("closed once")
            .join()
            .unwrap_or_else(|_| Err("the history writer panicked".to_owned()));
        match result {
            Ok(totals) => Ok(Closed {
                totals,
                history: self.history.clone(),
                observations: self.observations.clone(),
            }),
            Err(message) => Err(WorkloadError::HistoryWrite {
                path: self.history.clone(),
                message,
            }),
        }
    }
}

impl Drop for RecorderThread {
    fn drop(&mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

struct Files {
    history: BufWriter<File>,
    observations: BufWriter<File>,
}

fn write_line<T: serde::Serialize>(out: &mut BufWriter<File>, value: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// The writer thread's state.
struct Writer<'a> {
    files: Files,
    shared: &'a Shared,
    error: Option<String>,
    dirty: bool,
    last_flush: Instant,
}

impl Writer<'_> {
    fn ops(&mut self, pending: &mut Vec<Message>) {
        if pending.is_empty() {
            return;
        }
        let mut snapshots = Vec::new();
        {
            let mut totals = self.shared.totals.lock().expect("totals");
            for message in pending.drain(..) {
                match message {
                    Message::Op {
                        op,
                        tier,
                        read_back,
                    } => {
                        let latency_us = op.complete_ns.saturating_sub(op.invoke_ns) / 1000;
                        totals.add(tier, op.kind, op.outcome, latency_us, read_back, op.attempt);
                        if self.error.is_none() {
                            match write_line(&mut self.files.history, &op) {
                                Ok(()) => {
                                    totals.history_lines += 1;
                                    self.dirty = true;
                                }
                                Err(e) => self.error = Some(format!("writing the history: {e}")),
                            }
                        }
                    }
                    Message::DuplicateAck => totals.duplicate_acks += 1,
                    Message::Snapshot(reply) => snapshots.push(reply),
                }
            }
        }
        // Answer snapshots after a flush, so that what they count is on disk.
        if !snapshots.is_empty() {
            self.flush(true);
            let totals = self.shared.totals.lock().expect("totals").clone();
            for reply in snapshots {
                let _ = reply.send(totals.clone());
            }
        }
    }

    fn observation(&mut self, o: &Observation) {
        if self.error.is_some() {
            return;
        }
        match write_line(&mut self.files.observations, o) {
            Ok(()) => {
                self.shared.totals.lock().expect("totals").observation_lines += 1;
                self.dirty = true;
            }
            Err(e) => self.error = Some(format!("writing the observations: {e}")),
        }
    }

    fn flush(&mut self, now: bool) {
        if !self.dirty || self.error.is_some() || !(now || self.last_flush.elapsed() >= FLUSH_EVERY)
        {
            return;
        }
        if let Err(e) = self
            .files
            .history
            .flush()
            .and_then(|()| self.files.observations.flush())
        {
            self.error = Some(format!("flushing: {e}"));
        }
        self.dirty = false;
        self.last_flush = Instant::now();
    }

    fn publish_error(&self) {
        if let Some(e) = &self.error {
            if !self.shared.failed.swap(true, Ordering::Relaxed) {
                *self.shared.error.lock().expect("error") = Some(e.clone());
            }
        }
    }

    fn finish(mut self) -> Result<Totals, String> {
        if self.error.is_none() {
            let f = &mut self.files;
            let sync = f
                .history
                .flush()
                .and_then(|()| f.history.get_ref().sync_data())
                .and_then(|()| f.observations.flush())
                .and_then(|()| f.observations.get_ref().sync_data());
            if let Err(e) = sync {
                self.error = Some(format!("syncing: {e}"));
            }
        }
        self.publish_error();
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.shared.totals.lock().expect("totals").clone()),
        }
    }
}

async fn writer_loop(
    files: Files,
    mut ops: mpsc::Receiver<Message>,
    mut observations: mpsc::UnboundedReceiver<Observation>,
    mut close: oneshot::Receiver<()>,
    shared: &Shared,
) -> Result<Totals, String> {
    let mut writer = Writer {
        files,
        shared,
        error: None,
        dirty: false,
        last_flush: Instant::now(),
    };
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Vec<Message> = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            biased;
            n = ops.recv_many(&mut pending, BATCH) => {
                if n == 0 {
                    break;
                }
                writer.ops(&mut pending);
                if n < BATCH {
                    // Let operations accumulate rather than wake this thread for each one:
                    // a wake-up per operation costs the load more than the writing does.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            Some(o) = observations.recv() => writer.observation(&o),
            _ = &mut close => break,
            _ = ticker.tick() => {}
        }
        // Observations are few: take what is queued now.
        while let Ok(o) = observations.try_recv() {
            writer.observation(&o);
        }
        writer.flush(false);
        writer.publish_error();
    }
    // Closing: drain whatever is queued, then stop.
    ops.close();
    while let Ok(m) = ops.try_recv() {
        pending.push(m);
    }
    writer.ops(&mut pending);
    observations.close();
    while let Ok(o) = observations.try_recv() {
        writer.observation(&o);
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpKind, Outcome, Pattern};

    fn op(i: u64) -> Operation {
        Operation {
            tenant: "t001".into(),
            process: "t001/c1".into(),
            node: "a1".into(),
            reconnected: false,
            sent_node: None,
            client_zone: None,
            kind: OpKind::Write,
            pattern: Pattern::Chat,
            value: Some(format!("t001/c1/{i}")),
            attempt: 1,
            stream: "FL_t001".into(),
            seq: Some(i),
            invoke_ns: i * 1000,
            complete_ns: i * 1000 + 500_000,
            invoke_unix_ms: 1,
            complete_unix_ms: 2,
            outcome: Outcome::Ok,
            error: None,
            read: None,
            served_tenant: None,
        }
    }

    fn header() -> HistoryHeader {
        HistoryHeader {
            format: HISTORY_FORMAT.into(),
            version: HISTORY_FORMAT_VERSION,
            run_id: "r".into(),
            started_at_unix_ms: 0,
            adapter: "nats".into(),
            client: None,
        }
    }

    #[test]
    fn writes_every_op_and_observation_as_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (h, o) = (dir.path().join("h.jsonl"), dir.path().join("o.jsonl"));
        let (recorder, thread) = Recorder::open(&h, &o, &header()).expect("open");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            for i in 1..=1000 {
                recorder.op(op(i), Tier::Small).await;
            }
            recorder.observe(Observation::Leader {
                at_ns: 5,
                observer: "a1".into(),
                stream: "$meta".into(),
                leader: Some("b1".into()),
            });
            let totals = recorder.snapshot().await;
            assert_eq!(totals.load_total().0, 1000);
        });
        let closed = thread.close().expect("close");
        assert_eq!(closed.totals.history_lines, 1001);
        let text = std::fs::read_to_string(&h).expect("read");
        let mut lines = text.lines();
        let head: HistoryHeader =
            serde_json::from_str(lines.next().expect("header")).expect("header json");
        assert_eq!(head, header());
        let ops: Vec<Operation> = lines
            .map(|l| serde_json::from_str(l).expect("op"))
            .collect();
        assert_eq!(ops.len(), 1000);
        assert_eq!(ops[999], op(1000));
        let obs: Vec<Observation> = std::fs::read_to_string(&o)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("obs"))
            .collect();
        assert_eq!(obs.len(), 2);
        assert!(matches!(obs[0], Observation::Header { .. }));
    }

    #[test]
    fn unwritable_paths_are_clear_errors() {
        let error = check_writable("history", Path::new("/nonexistent-dir-fl/h.jsonl"))
            .expect_err("no dir");
        let text = error.to_string();
        assert!(
            text.contains("/nonexistent-dir-fl/h.jsonl") && text.contains("does not exist"),
            "{text}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ok.jsonl");
        check_writable("history", &path).expect("writable");
        assert!(!path.exists(), "the probe leaves nothing behind");
        let error = check_writable("history", dir.path()).expect_err("a directory");
        assert!(error.to_string().contains("history"), "{error}");
    }
}
