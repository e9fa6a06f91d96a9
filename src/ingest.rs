//! Reading the inputs through the pipeline: reader threads decompress and cut chunks of lines ahead, a parsing
//! thread has each chunk parsed on the pool, and the calling thread applies parsed chunks in input order while
//! the next ones are parsed.
//!
//! Why this module exists: keeping every core busy while the order of rows, rejects and counts stays the input
//! order is the one piece of concurrency of a run. It does not know what is done with parsed chunks: the run
//! applies them ([`crate::run::Run`]), the overwrite pre-pass only collects their partitions.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel, sync_channel};
use std::time::Duration;

use xxhash_rust::xxh3::Xxh3;

use crate::dedupe::EarlierIds;
use crate::error::{Error, Result};
use crate::input::{self, Compression, Source};
use crate::layout::PartitionMode;
use crate::lines::{Chunk, LineReader};
use crate::report::{InputReport, Progress};
use crate::run::{Parsed, Sink, parse_chunk};

/// Hashes what passes through it (the decompressed input), for the run id.
struct Hashing<R> {
    inner: R,
    hasher: Xxh3,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// What a reader thread sends for one input, in order: chunks, then `Done` (or `Failed`).
enum Feed {
    Chunk { chunk: Chunk, raw_read: u64 },
    Done(InputEnd),
    Failed(Error),
}

/// What is known of one input once it was read to its end.
struct InputEnd {
    raw_bytes: u64,
    decompressed_bytes: u64,
    hash: u128,
    compression: Compression,
}

/// Chunks a reader may read ahead of the parser, per input.
pub const PREFETCH_CHUNKS: usize = 2;

/// Reads (and decompresses) one input on its own thread, cutting it into chunks of lines. Chunk buffers sent
/// back on the returned sender are reused.
fn spawn_reader(
    source: Source,
    max_line_bytes: usize,
    chunk_bytes: usize,
) -> (Receiver<Feed>, Sender<Vec<u8>>) {
    let (tx, rx) = sync_channel(PREFETCH_CHUNKS);
    let (recycle, recycled) = channel();
    std::thread::spawn(move || {
        let read = || -> Result<Feed> {
            let opened = input::open(&source)?;
            let raw = opened.raw_bytes_read.clone();
            let raw_read = || raw.load(std::sync::atomic::Ordering::Relaxed);
            let hashing = Hashing {
                inner: opened.reader,
                hasher: Xxh3::new(),
                bytes: 0,
            };
            let mut reader = LineReader::new(hashing, max_line_bytes, chunk_bytes)
                .with_recycling(recycled, (PREFETCH_CHUNKS + 1) * chunk_bytes);
            loop {
                match reader.next_chunk() {
                    Ok(Some(chunk)) => {
                        if tx
                            .send(Feed::Chunk {
                                chunk,
                                raw_read: raw_read(),
                            })
                            .is_err()
                        {
                            // The run stopped (an error elsewhere): nothing left to do.
                            return Err(Error::Cancelled);
                        }
                    }
                    Ok(None) => break,
                    Err(source_err) => {
                        return Err(Error::Read {
                            path: source.name(),
                            offset: raw_read(),
                            line: reader.next_line_number(),
                            source: source_err,
                        });
                    }
                }
            }
            let hashing = reader.into_inner();
            Ok(Feed::Done(InputEnd {
                raw_bytes: raw_read(),
                decompressed_bytes: hashing.bytes,
                hash: hashing.hasher.digest128(),
                compression: opened.compression,
            }))
        };
        let last = read().unwrap_or_else(Feed::Failed);
        let _ = tx.send(last);
    });
    (rx, recycle)
}

/// How inputs are cut and parsed.
pub struct Reading<'a> {
    pub max_line_bytes: usize,
    /// Bytes of lines per chunk.
    pub chunk_bytes: usize,
    /// Inputs read (and decompressed) at once, at most: each holds its chunks read ahead.
    pub readers: usize,
    pub pool: &'a Arc<rayon::ThreadPool>,
    pub partition: PartitionMode,
    /// Suppression and pseudonymisation, applied to rows as they are parsed.
    pub privacy: Option<&'a crate::pseudonymise::AtLoad>,
}

/// What reading the inputs gives: one report per input, and what identifies each (its identity, or for
/// standard input a hash of its content), for the run id.
pub struct InputsRead {
    pub inputs: Vec<InputReport>,
    pub identities: Vec<Vec<u8>>,
}

/// Reads every input, in order, into `sink`. With `earlier`, rows already loaded by earlier runs become
/// duplicates while chunks are parsed.
///
/// With more than one thread, two stages on two threads: this one applies parsed chunks to `sink` in input
/// order; a parsing thread takes the readers' chunks in the same order, parses each on the pool and hands it
/// over, up to [`PARSED_AHEAD`] chunks ahead. So the pool parses the next chunks while a chunk is applied, and
/// neither waits for the other chunk by chunk. With one thread, parsing and applying take turns on this one.
pub fn read_inputs(
    r: &Reading<'_>,
    sources: &[Source],
    sink: &mut impl Sink,
    earlier: Option<&mut EarlierIds>,
    progress: &Progress,
) -> Result<InputsRead> {
    let stop = AtomicBool::new(false);
    let mut parser = Parser {
        r,
        stop: &stop,
        readers: Readers::new(r, sources),
        current: None,
        earlier,
    };
    if r.pool.current_num_threads() <= 1 {
        return apply_inputs(sources, || parser.next(), sink, progress);
    }
    let (parsed_tx, parsed_rx) = sync_channel(PARSED_AHEAD);
    std::thread::scope(|s| {
        let parsing = s.spawn(move || {
            while let Some(message) = parser.next() {
                let failed = message.is_err();
                // A closed channel: the run stopped (an error on the applying side).
                if parsed_tx.send(message).is_err() || failed {
                    break;
                }
            }
        });
        let applied = apply_inputs(sources, || parsed_rx.recv().ok(), sink, progress);
        // Dropped before joining the parser: one blocked handing over a chunk then stops, and one waiting for a
        // slow input gives up.
        drop(parsed_rx);
        stop.store(true, Ordering::Relaxed);
        if parsing.join().is_err() {
            return Err(Error::Internal("the parsing thread panicked".to_string()));
        }
        applied
    })
}

/// Chunks parsed and waiting to be applied, at most (besides the one being parsed and the one being applied).
pub const PARSED_AHEAD: usize = 1;

/// What the parsing side hands over, in input order: parsed chunks of an input, then its end.
enum Handed {
    Chunk {
        parsed: Parsed,
        /// Raw bytes of its input read so far (for the progress display).
        raw_read: u64,
        /// Where the chunk's buffer goes back to its reader.
        recycle: Sender<Vec<u8>>,
    },
    End(InputEnd),
}

/// The parsing side: every input's chunks, in order, parsed on the pool. An error is handed over in the place
/// of the chunk it stopped at (the applying side reports it).
struct Parser<'r, 's, 'e> {
    r: &'r Reading<'r>,
    readers: Readers<'s>,
    /// The input being parsed.
    current: Option<Feeding>,
    earlier: Option<&'e mut EarlierIds>,
    /// Set when the applying side stopped: a parser waiting for an input gives up.
    stop: &'r AtomicBool,
}

impl Parser<'_, '_, '_> {
    /// The next parsed chunk or input end; `None` after the last input.
    fn next(&mut self) -> Option<Result<Handed>> {
        if self.current.is_none() {
            self.current = Some(self.readers.next()?);
        }
        let Feeding {
            name,
            feed,
            recycle,
        } = self.current.as_ref()?;
        let message = match receive(feed, name, self.stop) {
            Ok(Feed::Chunk { chunk, raw_read }) => parse_chunk(
                chunk,
                self.r.max_line_bytes,
                self.r.pool,
                self.earlier.as_deref_mut(),
                self.r.partition,
                self.r.privacy,
            )
            .map(|parsed| Handed::Chunk {
                parsed,
                raw_read,
                recycle: recycle.clone(),
            }),
            Ok(Feed::Done(end)) => Ok(Handed::End(end)),
            Ok(Feed::Failed(e)) | Err(e) => Err(e),
        };
        if !matches!(message, Ok(Handed::Chunk { .. })) {
            self.current = None;
        }
        Some(message)
    }
}

/// The applying side: parsed chunks into `sink`, in input order, with each input's report at its end.
fn apply_inputs(
    sources: &[Source],
    mut next: impl FnMut() -> Option<Result<Handed>>,
    sink: &mut impl Sink,
    progress: &Progress,
) -> Result<InputsRead> {
    let mut inputs = Vec::with_capacity(sources.len());
    let mut identities = Vec::with_capacity(sources.len());
    let mut done = 0;
    for (input, source) in sources.iter().enumerate() {
        let (lines_before, events_before) = sink.seen();
        let name = source.name();
        let end = loop {
            let message = next().ok_or_else(|| {
                Error::Internal(format!("parsing ended before the end of {name}"))
            })??;
            match message {
                Handed::Chunk {
                    parsed,
                    raw_read,
                    recycle,
                } => {
                    if let Some(buf) = sink.apply(input, &name, Some(parsed))? {
                        let _ = recycle.send(buf);
                    }
                    let (rows, rejected) = sink.tally();
                    progress.read(done + raw_read, rows, rejected);
                }
                Handed::End(end) => break end,
            }
        };
        done += end.raw_bytes;
        identities.push(match source.identity() {
            Some(id) => id.into_bytes(),
            None => [
                end.hash.to_le_bytes().as_slice(),
                &end.decompressed_bytes.to_le_bytes(),
            ]
            .concat(),
        });
        let (lines, events) = sink.seen();
        inputs.push(InputReport {
            path: name,
            bytes: end.raw_bytes,
            decompressed_bytes: end.decompressed_bytes,
            compression: end.compression.name(),
            lines: lines - lines_before,
            events: events - events_before,
        });
    }
    Ok(InputsRead { inputs, identities })
}

/// The reader threads of a run: inputs are read (and decompressed) up to `readers` at a time, never more than
/// the pool has threads, and consumed strictly in order.
struct Readers<'s> {
    sources: &'s [Source],
    max_line_bytes: usize,
    chunk_bytes: usize,
    ahead: usize,
    spawned: usize,
    running: VecDeque<Feeding>,
}

/// An input whose reader thread runs: its name, its chunks, and where their buffers go back.
struct Feeding {
    name: String,
    feed: Receiver<Feed>,
    recycle: Sender<Vec<u8>>,
}

impl<'s> Readers<'s> {
    fn new(r: &Reading<'_>, sources: &'s [Source]) -> Self {
        Readers {
            sources,
            max_line_bytes: r.max_line_bytes,
            chunk_bytes: r.chunk_bytes,
            ahead: r.readers.min(r.pool.current_num_threads()).max(1),
            spawned: 0,
            running: VecDeque::new(),
        }
    }

    /// The next input, after starting readers up to `ahead`.
    fn next(&mut self) -> Option<Feeding> {
        while self.spawned < self.sources.len() && self.running.len() < self.ahead {
            let source = &self.sources[self.spawned];
            let (feed, recycle) =
                spawn_reader(source.clone(), self.max_line_bytes, self.chunk_bytes);
            self.running.push_back(Feeding {
                name: source.name(),
                feed,
                recycle,
            });
            self.spawned += 1;
        }
        self.running.pop_front()
    }
}

/// The next message of an input's reader thread.
fn receive(feed: &Receiver<Feed>, name: &str, stop: &AtomicBool) -> Result<Feed> {
    loop {
        match feed.recv_timeout(STOP_CHECK) {
            Ok(feed) => return Ok(feed),
            Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => {
                return Err(Error::Cancelled);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Internal(format!(
                    "the reader thread of {name} ended without answering"
                )));
            }
        }
    }
}

/// How often a parser waiting for a slow input (a pipe on standard input) looks whether the run stopped.
const STOP_CHECK: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;
    use crate::options::ProgressWhen;

    /// A sink whose first chunk fails, as a full disk fails the rejects file.
    struct Failing;

    impl Sink for Failing {
        fn apply(&mut self, _: usize, _: &str, parsed: Option<Parsed>) -> Result<Option<Vec<u8>>> {
            match parsed {
                Some(_) => Err(Error::Internal("the sink failed".into())),
                None => Ok(None),
            }
        }
        fn tally(&self) -> (u64, u64) {
            (0, 0)
        }
        fn seen(&self) -> (u64, u64) {
            (0, 0)
        }
    }

    /// An input that is still open (a pipe whose writer has more to send, later) must not keep a run that
    /// failed from ending: the parsing thread waiting for its next chunk gives up.
    #[test]
    fn a_failed_apply_ends_the_run_while_an_input_is_still_open() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let fifo = dir.path().join("events.ndjson");
        let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("a path");
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
        let (close, closed) = channel::<()>();
        let writer_path = fifo.clone();
        let writer = std::thread::spawn(move || {
            let mut pipe = std::fs::OpenOptions::new()
                .write(true)
                .open(writer_path)
                .expect("the pipe");
            let line = b"{\"type\":\"group\",\"groupId\":\"g\",\"userId\":\"u\"}\n";
            // One chunk's lines (a chunk of 4096 bytes holds 8 at most) and part of the next: the parser then
            // waits for the rest.
            for _ in 0..(crate::lines::chunk_lines(4096) + 4) {
                pipe.write_all(line).expect("written");
            }
            // Held open until the test is over (or a minute at most).
            let _ = closed.recv_timeout(Duration::from_secs(60));
        });
        let (done, result) = channel();
        std::thread::spawn(move || {
            let pool = Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .build()
                    .expect("a pool"),
            );
            let reading = Reading {
                max_line_bytes: 1 << 20,
                chunk_bytes: 4096,
                readers: 2,
                pool: &pool,
                partition: PartitionMode::Day,
                privacy: None,
            };
            let progress = Progress::new(ProgressWhen::Never, true, None);
            let read = read_inputs(
                &reading,
                &[Source::File(fifo)],
                &mut Failing,
                None,
                &progress,
            );
            let _ = done.send(read.map(|_| ()));
        });
        let outcome = result.recv_timeout(Duration::from_secs(30));
        let _ = close.send(());
        let _ = writer.join();
        match outcome {
            Ok(Err(Error::Internal(message))) => assert_eq!(message, "the sink failed"),
            Ok(other) => panic!("expected the sink's error, got {other:?}"),
            Err(_) => panic!("the run did not end within 30 s of its sink failing"),
        }
    }
}
