//! Splitting a byte stream into lines, in chunks.
//!
//! Why this module exists: lines are the unit of everything (counts, rejects, offsets), and they must be cut
//! the same way whatever the thread count. The reader hands out chunks of whole lines (a few MiB each) that
//! the parser then works on in parallel; it keeps exact line numbers and byte offsets, drops a trailing `\r`
//! and a leading UTF-8 BOM, and never holds a line over the line limit: such a line keeps only its first
//! [`TOO_LONG_PREFIX`] bytes (for the rejects file) and its length.
//!
//! What a chunk holds is bounded by its bytes *and* by its lines: every line costs a [`Line`] here and an
//! outcome in the parser whatever its length, so a chunk ends after [`chunk_lines`] lines even when they are
//! short. Empty lines (nothing, or only `\r`) are only counted ([`Chunk::empty`]): a file of newlines costs
//! no memory per line and is read at the speed of a byte scan.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::mpsc::Receiver;

/// How much of an over-long line is kept for the rejects file.
pub const TOO_LONG_PREFIX: usize = 64 * 1024;
const BOM: &[u8] = b"\xEF\xBB\xBF";
const READ_SIZE: usize = 256 * 1024;
/// A chunk holds at most one line per this many bytes of its target size.
pub const BYTES_PER_LINE: usize = 512;

/// The most lines (other than empty ones) a chunk of `chunk_target` bytes holds.
pub fn chunk_lines(chunk_target: usize) -> usize {
    (chunk_target / BYTES_PER_LINE).max(1)
}

/// One line inside a [`Chunk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line's bytes in `Chunk::data`, without `\n`, a trailing `\r`, or the file's BOM.
    pub range: Range<usize>,
    /// 1-based line number in the file.
    pub number: u64,
    /// Byte offset of the line's first byte in the (decompressed) file.
    pub offset: u64,
    /// For a line over the limit: its full length in bytes (then `range` holds only its prefix).
    pub too_long: Option<u64>,
}

/// A run of whole lines and the bytes they point into.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The bytes the lines point into (possibly followed by unused bytes).
    pub data: Vec<u8>,
    /// The lines of the chunk that are not empty, in order.
    pub lines: Vec<Line>,
    /// Empty lines among them (nothing between two newlines, or only `\r`): counted, not listed.
    pub empty: u64,
}

impl Chunk {
    pub fn bytes(&self, line: &Line) -> &[u8] {
        &self.data[line.range.clone()]
    }
}

/// Reads lines from a stream, chunk by chunk.
pub struct LineReader<R> {
    inner: R,
    limit: usize,
    chunk_target: usize,
    max_lines: usize,
    /// Bytes read but not yet handed out (the start of a partial line).
    carry: Vec<u8>,
    /// Offset in the stream of `carry[0]`.
    carry_offset: u64,
    next_number: u64,
    eof: bool,
    at_start: bool,
    /// Chunk buffers handed back by the consumer, reused so their memory is not cleared and faulted in again.
    recycled: Option<Receiver<Vec<u8>>>,
    /// With recycling: the chunks handed out and not yet back, and the bytes they hold. Reading ahead stops
    /// at [`LineReader::ahead`] bytes (once two chunks are out), so chunks made large by long lines are not
    /// read ahead as far as ordinary ones.
    out_chunks: usize,
    out_bytes: usize,
    ahead: usize,
}

impl<R: Read> LineReader<R> {
    /// `limit`: the longest line kept whole; `chunk_target`: the bytes of lines per chunk (at least).
    pub fn new(inner: R, limit: usize, chunk_target: usize) -> Self {
        LineReader {
            inner,
            limit: limit.max(1),
            chunk_target: chunk_target.max(1),
            max_lines: chunk_lines(chunk_target),
            carry: Vec::new(),
            carry_offset: 0,
            next_number: 1,
            eof: false,
            at_start: true,
            recycled: None,
            out_chunks: 0,
            out_bytes: 0,
            ahead: usize::MAX,
        }
    }

    /// Reuses the chunk buffers (`Chunk::data`) sent back on `recycled`, where the consumer returns every chunk
    /// it is done with; and reads no further ahead than `ahead` bytes of chunks not yet back (two chunks are
    /// always allowed out: the one being applied, and the next).
    pub fn with_recycling(mut self, recycled: Receiver<Vec<u8>>, ahead: usize) -> Self {
        self.recycled = Some(recycled);
        self.ahead = ahead;
        self
    }

    /// A buffer for the next chunk: one handed back (waiting for one while too much is out), or a new one.
    fn buffer(&mut self) -> Vec<u8> {
        let mut reuse = None;
        if let Some(r) = &self.recycled {
            let back = |buf: Vec<u8>, out: &mut (usize, usize)| {
                out.0 = out.0.saturating_sub(1);
                out.1 = out.1.saturating_sub(buf.capacity());
                buf
            };
            let mut out = (self.out_chunks, self.out_bytes);
            while let Ok(buf) = r.try_recv() {
                reuse = Some(back(buf, &mut out));
            }
            while out.0 >= 2 && out.1 > self.ahead {
                match r.recv() {
                    Ok(buf) => reuse = Some(back(buf, &mut out)),
                    Err(_) => break, // the consumer is gone: the send that follows ends the reader
                }
            }
            (self.out_chunks, self.out_bytes) = out;
        }
        reuse.unwrap_or_else(|| Vec::with_capacity(self.chunk_target + 2 * READ_SIZE))
    }

    /// The number the next line will get (for error messages).
    pub fn next_line_number(&self) -> u64 {
        self.next_number
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads more bytes into `buf[*filled..]` (growing its initialised part only when it is too short); false
    /// at the end of the stream.
    fn fill(&mut self, buf: &mut Vec<u8>, filled: &mut usize) -> io::Result<bool> {
        let want = *filled + READ_SIZE;
        if buf.len() < want {
            // Grown by a quarter at a time (not doubled): a chunk holding one long line stays near its size.
            if buf.capacity() < want {
                let grown = want.max(buf.capacity() + buf.capacity() / 4);
                buf.reserve_exact(grown - buf.len());
            }
            buf.resize(want, 0);
        }
        loop {
            match self.inner.read(&mut buf[*filled..*filled + READ_SIZE]) {
                Ok(n) => {
                    *filled += n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn push_line(
        &mut self,
        chunk: (&mut Vec<Line>, &mut u64),
        data: &[u8],
        base: u64,
        range: Range<usize>,
        too_long: Option<u64>,
    ) {
        let (lines, empty) = chunk;
        let offset = base + range.start as u64;
        let mut range = range;
        if self.at_start {
            self.at_start = false;
            if data[range.clone()].starts_with(BOM) {
                range.start += BOM.len();
            }
        }
        // A whole line over the limit that arrived within one read: same treatment as a longer one.
        let too_long = too_long.or_else(|| {
            let len = range.end - range.start;
            (len > self.limit).then(|| {
                range.end = range.start + TOO_LONG_PREFIX.min(len);
                len as u64
            })
        });
        if too_long.is_none() && range.end > range.start && data[range.end - 1] == b'\r' {
            range.end -= 1;
        }
        if range.is_empty() && too_long.is_none() {
            *empty += 1;
            self.next_number += 1;
            return;
        }
        lines.push(Line {
            range,
            number: self.next_number,
            offset,
            too_long,
        });
        self.next_number += 1;
    }

    /// The next chunk of lines, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        // A recycled buffer, or room for a whole chunk up front: growing by doubling would copy it.
        let mut data = self.buffer();
        if data.len() < self.carry.len() {
            data.resize(self.carry.len(), 0);
        }
        data[..self.carry.len()].copy_from_slice(&self.carry);
        let mut filled = self.carry.len();
        self.carry.clear();
        let base = self.carry_offset;
        let mut lines = Vec::with_capacity(self.max_lines.min(self.chunk_target / 256));
        let mut empty = 0;
        let mut line_start = 0;
        let mut scan_from = 0;
        loop {
            while lines.len() < self.max_lines {
                let Some(i) = memchr::memchr(b'\n', &data[scan_from..filled]) else {
                    break;
                };
                let end = scan_from + i;
                self.push_line((&mut lines, &mut empty), &data, base, line_start..end, None);
                line_start = end + 1;
                scan_from = line_start;
            }
            if lines.len() >= self.max_lines {
                break;
            }
            scan_from = filled;
            let partial = filled - line_start;
            if partial > self.limit {
                // Over the limit: keep a prefix, then read on to the newline without holding the bytes.
                data.truncate(filled);
                let (len, rest) = self.skip_rest_of_line(&mut data, line_start)?;
                let keep_end = data.len();
                self.push_line(
                    (&mut lines, &mut empty),
                    &data,
                    base,
                    line_start..keep_end,
                    Some(len),
                );
                // Hand out this chunk now: what follows the newline starts the next chunk, at a known offset.
                self.carry = rest;
                self.carry_offset = base + line_start as u64 + len + 1;
                return Ok(Some(self.hand_out(Chunk { data, lines, empty })));
            }
            if line_start >= self.chunk_target {
                break;
            }
            if self.eof || !self.fill(&mut data, &mut filled)? {
                self.eof = true;
                if filled > line_start {
                    self.push_line(
                        (&mut lines, &mut empty),
                        &data,
                        base,
                        line_start..filled,
                        None,
                    );
                    line_start = filled;
                }
                break;
            }
        }
        self.carry.extend_from_slice(&data[line_start..filled]);
        self.carry_offset = base + line_start as u64;
        if lines.is_empty() && empty == 0 && self.eof && self.carry.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.hand_out(Chunk { data, lines, empty })))
    }

    /// Counts a chunk as out (with recycling, until its buffer comes back).
    fn hand_out(&mut self, chunk: Chunk) -> Chunk {
        if self.recycled.is_some() {
            self.out_chunks += 1;
            self.out_bytes += chunk.data.capacity();
        }
        chunk
    }

    /// Reads past the end of a too-long line that starts at `data[line_start]`, keeping at most
    /// [`TOO_LONG_PREFIX`] of its bytes in `data`. Returns the line's full length (without `\n`) and the bytes
    /// read after its newline.
    fn skip_rest_of_line(
        &mut self,
        data: &mut Vec<u8>,
        line_start: usize,
    ) -> io::Result<(u64, Vec<u8>)> {
        let mut len = (data.len() - line_start) as u64;
        data.truncate(line_start + TOO_LONG_PREFIX.min(data.len() - line_start));
        let mut buf = Vec::with_capacity(READ_SIZE);
        loop {
            let mut filled = 0;
            if !self.fill(&mut buf, &mut filled)? {
                self.eof = true;
                return Ok((len, Vec::new()));
            }
            let read = &buf[..filled];
            let newline = memchr::memchr(b'\n', read);
            let part = &read[..newline.unwrap_or(read.len())];
            let room = TOO_LONG_PREFIX.saturating_sub(data.len() - line_start);
            data.extend_from_slice(&part[..room.min(part.len())]);
            len += part.len() as u64;
            if let Some(i) = newline {
                return Ok((len, read[i + 1..].to_vec()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_lines(
        input: &[u8],
        limit: usize,
        chunk: usize,
    ) -> Vec<(Vec<u8>, u64, u64, Option<u64>)> {
        // A reader that returns at most 7 bytes a call, to exercise every boundary.
        struct Slow<'a>(&'a [u8]);
        impl Read for Slow<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(7).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = LineReader::new(Slow(input), limit, chunk);
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            for l in &c.lines {
                out.push((c.bytes(l).to_vec(), l.number, l.offset, l.too_long));
            }
        }
        out
    }

    /// Every chunk of `input`: (lines, empty lines, bytes held).
    fn chunks(input: &[u8], chunk: usize) -> Vec<(usize, u64)> {
        let mut r = LineReader::new(input, 1 << 20, chunk);
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            out.push((c.lines.len(), c.empty));
        }
        out
    }

    fn simple(input: &[u8]) -> Vec<(String, u64, u64)> {
        all_lines(input, 1 << 20, 3)
            .into_iter()
            .map(|(b, n, o, _)| (String::from_utf8(b).unwrap(), n, o))
            .collect()
    }

    #[test]
    fn lines_numbers_and_offsets() {
        // The empty third line is counted, not listed; the lines after it keep their numbers.
        assert_eq!(
            simple(b"a\nbb\n\nccc"),
            vec![
                ("a".into(), 1, 0),
                ("bb".into(), 2, 2),
                ("ccc".into(), 4, 6)
            ]
        );
        assert_eq!(chunks(b"a\nbb\n\nccc", 1 << 20), vec![(3, 1)]);
        // A trailing newline does not make an extra line; an empty input has none.
        assert_eq!(simple(b"a\n").len(), 1);
        assert!(simple(b"").is_empty());
        assert!(chunks(b"", 1 << 20).is_empty());
        assert_eq!(chunks(b"\n", 1 << 20), vec![(0, 1)]);
        // A line of spaces is not empty: the parser calls it blank.
        assert_eq!(simple(b" \n"), vec![(" ".into(), 1, 0)]);
    }

    #[test]
    fn empty_lines_cost_no_line_and_short_lines_end_chunks() {
        // A million newlines (and \r\n pairs): nothing listed, every one counted, in chunks of the byte target.
        let newlines = vec![b'\n'; 1_000_000];
        let c = chunks(&newlines, 64 << 10);
        assert!(c.iter().all(|&(lines, _)| lines == 0));
        assert_eq!(c.iter().map(|&(_, e)| e).sum::<u64>(), 1_000_000);
        assert!(c.len() > 1, "{c:?}");
        assert!(
            c.iter().all(|&(_, e)| e <= (64 << 10) + READ_SIZE as u64),
            "a chunk ends near its byte target: {c:?}"
        );
        let crlf = b"\r\n".repeat(1000);
        assert_eq!(chunks(&crlf, 1 << 20), vec![(0, 1000)]);
        // Short lines: a chunk lists at most chunk_lines(target) of them, whatever their bytes.
        let short = b"{}\n".repeat(10_000);
        let c = chunks(&short, 64 << 10);
        let cap = chunk_lines(64 << 10);
        assert_eq!(cap, 128);
        assert!(c.iter().all(|&(lines, _)| lines <= cap), "{c:?}");
        assert_eq!(c.iter().map(|&(l, _)| l).sum::<usize>(), 10_000);
        // Numbers and offsets stay exact across those cuts.
        let all = all_lines(&short, 1 << 20, 64 << 10);
        assert_eq!(all.len(), 10_000);
        assert_eq!((all[9_999].1, all[9_999].2), (10_000, 29_997));
    }

    #[test]
    fn crlf_and_bom() {
        assert_eq!(
            simple(b"\xEF\xBB\xBFa\r\nb\r\n\r\n"),
            vec![("a".into(), 1, 0), ("b".into(), 2, 6)]
        );
        // A file that is only a BOM and a newline has one empty line.
        assert_eq!(chunks(b"\xEF\xBB\xBF\n", 1 << 20), vec![(0, 1)]);
        // Only a BOM at the start of the stream is dropped, and only one `\r`.
        assert_eq!(simple(b"a\n\xEF\xBB\xBFb\r\r\n")[1].0, "\u{feff}b\r");
    }

    #[test]
    fn too_long_lines_keep_prefix_and_length() {
        let mut input = Vec::new();
        input.extend_from_slice(b"ok\n");
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.extend_from_slice(b"\nnext\n");
        input.extend(std::iter::repeat_n(b'y', 70_000)); // no newline at the end
        let lines = all_lines(&input, 1000, 10);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], (b"ok".to_vec(), 1, 0, None));
        assert_eq!(lines[1].0.len(), TOO_LONG_PREFIX);
        assert_eq!((lines[1].1, lines[1].2, lines[1].3), (2, 3, Some(100_000)));
        assert_eq!(lines[2], (b"next".to_vec(), 3, 100_004, None));
        assert_eq!(
            (lines[3].1, lines[3].2, lines[3].3),
            (4, 100_009, Some(70_000))
        );
    }

    #[test]
    fn a_line_at_the_limit_is_kept_whole() {
        let mut input = vec![b'z'; 1000];
        input.push(b'\n');
        let lines = all_lines(&input, 1000, 10);
        assert_eq!(lines[0].0.len(), 1000);
        assert_eq!(lines[0].3, None);
    }

    #[test]
    fn chunking_does_not_change_lines() {
        let input: Vec<u8> = (0..500)
            .flat_map(|i| format!("line {i}\r\n").into_bytes())
            .collect();
        let a = all_lines(&input, 1 << 20, 1);
        let b = all_lines(&input, 1 << 20, 1 << 20);
        assert_eq!(a, b);
        assert_eq!(a.len(), 500);
    }
}
