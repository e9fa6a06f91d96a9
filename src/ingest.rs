//! Reading the inputs through the pipeline (SPEC §10): reader threads decompress and cut chunks of lines ahead,
//! each chunk is parsed on the pool while the previous one is applied in input order.
//!
//! Why this module exists: keeping every core busy while the order of rows, rejects and counts stays the input
//! order is the one piece of concurrency of a run. It does not know what is done with parsed chunks: the run
//! applies them ([`crate::run::Run`]), the overwrite pre-pass only collects their partitions.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};

use xxhash_rust::xxh3::Xxh3;

use crate::dedupe::EarlierIds;
use crate::error::{Error, Result};
use crate::input::{self, Compression, Source};
use crate::lines::{Chunk, LineReader};
use crate::report::{InputReport, Progress};
use crate::run::{Parsed, Sink, parse_chunk};
use crate::writer::PartitionMode;

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
    Chunk {
        chunk: Chunk,
        raw_read: u64,
    },
    Done {
        raw_bytes: u64,
        decompressed_bytes: u64,
        hash: u128,
        compression: Compression,
    },
    Failed(Error),
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
            let mut reader =
                LineReader::new(hashing, max_line_bytes, chunk_bytes).with_recycling(recycled);
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
                            return Err(Error::Usage("cancelled".into()));
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
            Ok(Feed::Done {
                raw_bytes: raw_read(),
                decompressed_bytes: hashing.bytes,
                hash: hashing.hasher.digest128(),
                compression: opened.compression,
            })
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
    pub pool: &'a Arc<rayon::ThreadPool>,
    pub partition: PartitionMode,
}

/// What reading the inputs gives: one report per input, and what identifies each (its identity, or for
/// standard input a hash of its content), for the run id.
pub struct InputsRead {
    pub inputs: Vec<InputReport>,
    pub identities: Vec<Vec<u8>>,
}

/// Reads every input, in order, into `sink`. With `earlier`, rows already loaded by earlier runs become
/// duplicates while chunks are parsed.
pub fn read_inputs(
    r: &Reading<'_>,
    sources: &[Source],
    sink: &mut impl Sink,
    mut earlier: Option<&mut EarlierIds>,
    progress: &Progress,
) -> Result<InputsRead> {
    let pool = r.pool;
    let mut inputs = Vec::with_capacity(sources.len());
    let mut identities = Vec::with_capacity(sources.len());
    let mut done = 0;
    // Inputs are read (and decompressed) up to `pool threads` at a time, consumed strictly in order.
    let ahead = pool.current_num_threads().max(1);
    // With one thread, parse and apply take turns; with more, they overlap.
    let overlap = pool.current_num_threads() > 1;
    let mut readers: VecDeque<(Receiver<Feed>, Sender<Vec<u8>>)> = VecDeque::new();
    let mut spawned = 0;
    for (input, source) in sources.iter().enumerate() {
        while spawned < sources.len() && readers.len() < ahead {
            readers.push_back(spawn_reader(
                sources[spawned].clone(),
                r.max_line_bytes,
                r.chunk_bytes,
            ));
            spawned += 1;
        }
        let Some((feed, recycle)) = readers.pop_front() else {
            break;
        };
        let (lines_before, events_before) = sink.seen();
        let name = source.name();
        let mut pending: Option<Parsed> = None;
        loop {
            match feed.recv() {
                Ok(Feed::Chunk { chunk, raw_read }) => {
                    let previous = pending.take();
                    let earlier = earlier.as_deref_mut();
                    let parse =
                        |chunk| parse_chunk(chunk, r.max_line_bytes, pool, earlier, r.partition);
                    let (parsed, applied) = if overlap {
                        // Parse this chunk on the pool while the previous one is applied here.
                        let (parsed, applied) = std::thread::scope(|s| {
                            let parser = s.spawn(|| parse(chunk));
                            let applied = sink.apply(input, &name, previous);
                            (parser.join(), applied)
                        });
                        let parsed = parsed.unwrap_or_else(|_| {
                            Err(Error::Io {
                                action: "parsing",
                                path: name.clone().into(),
                                source: std::io::Error::other(
                                    "internal: the parser thread panicked",
                                ),
                            })
                        });
                        (parsed, applied)
                    } else {
                        let applied = sink.apply(input, &name, previous);
                        (parse(chunk), applied)
                    };
                    if let Some(buf) = applied? {
                        let _ = recycle.send(buf);
                    }
                    pending = Some(parsed?);
                    let (rows, rejected) = sink.tally();
                    progress.read(done + raw_read, rows, rejected);
                }
                Ok(Feed::Done {
                    raw_bytes,
                    decompressed_bytes,
                    hash,
                    compression,
                }) => {
                    sink.apply(input, &name, pending.take())?;
                    done += raw_bytes;
                    identities.push(match source.identity() {
                        Some(id) => id.into_bytes(),
                        None => [
                            hash.to_le_bytes().as_slice(),
                            &decompressed_bytes.to_le_bytes(),
                        ]
                        .concat(),
                    });
                    let (lines, events) = sink.seen();
                    inputs.push(InputReport {
                        path: name,
                        bytes: raw_bytes,
                        decompressed_bytes,
                        compression: compression.name(),
                        lines: lines - lines_before,
                        events: events - events_before,
                    });
                    break;
                }
                Ok(Feed::Failed(e)) => return Err(e),
                Err(_) => {
                    return Err(Error::Io {
                        action: "reading",
                        path: name.into(),
                        source: std::io::Error::other(
                            "internal: the reader thread ended without answering",
                        ),
                    });
                }
            }
        }
    }
    Ok(InputsRead { inputs, identities })
}
