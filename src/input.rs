//! Input discovery and reading: which files and objects a run reads, in which order, and how
//! they decompress.
//!
//! Why this module exists: a nightly export is a folder (or a bucket prefix) of mixed files, some gzipped, some
//! not, some named wrongly. Deciding what is an input (and in a deterministic order) and sniffing compression
//! from the first bytes rather than the name belong together, apart from parsing. Local files, standard input
//! and object-store objects are one [`Source`] type, so the pipeline does not know where bytes come from.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
#[cfg(unix)]
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::options::Output;
use crate::store::{self, Location};

/// Where lines come from.
#[derive(Debug, Clone)]
pub enum Source {
    Stdin,
    File(PathBuf),
    /// Standard input, kept in a file of the run's staging folder to be read more than once.
    SpooledStdin(PathBuf),
    /// An object in object storage (`s3://`, `gs://`, `az://`), streamed.
    Object {
        location: Location,
        size: u64,
        /// The store's version tag of the object (its ETag), for the run id.
        e_tag: Option<String>,
    },
}

impl Source {
    /// The name used in the report and the rejects file: the path as given, or `-`.
    pub fn name(&self) -> String {
        match self {
            Source::Stdin | Source::SpooledStdin(_) => "-".to_string(),
            Source::File(p) => p.display().to_string(),
            Source::Object { location, .. } => location.url.clone(),
        }
    }

    /// The size on disk, where known.
    pub fn size(&self) -> Option<u64> {
        match self {
            Source::Stdin => None,
            Source::File(p) | Source::SpooledStdin(p) => fs::metadata(p).ok().map(|m| m.len()),
            Source::Object { size, .. } => Some(*size),
        }
    }

    /// What identifies this input's content before reading it, for the run id: a file's path, size and
    /// modification time (what `make` and `rsync` trust), an object's URL, size and ETag. `None` for standard
    /// input, which is identified by a hash of its content once read.
    pub fn identity(&self) -> Option<String> {
        match self {
            Source::Stdin | Source::SpooledStdin(_) => None,
            Source::File(p) => {
                let meta = fs::metadata(p).ok()?;
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                Some(format!("file {} {} {mtime}", p.display(), meta.len()))
            }
            Source::Object {
                location,
                size,
                e_tag,
            } => Some(format!(
                "object {} {size} {}",
                location.url,
                e_tag.as_deref().unwrap_or("")
            )),
        }
    }
}

/// Compression of an input, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// True for a file name a directory walk picks up (ASCII case ignored, hidden names never): `.json`,
/// `.jsonl` or `.ndjson`, each optionally followed by `.gz` or `.zst`, and any `.gz` or `.zst` whatever comes
/// before it (Segment's S3 export writes `<epoch-ms>.<uuid>.gz`).
pub fn is_input_name(name: &str) -> bool {
    if name.starts_with('.') {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    let has = |ext: &str| lower.ends_with(ext) && lower.len() > ext.len();
    [".json", ".jsonl", ".ndjson", ".gz", ".zst"]
        .into_iter()
        .any(has)
}

fn path_bytes(p: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        p.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        p.to_string_lossy().as_bytes().to_vec()
    }
}

/// A directory walk: the folder given on the command line (canonical), the output it never enters, whether
/// links leading out of the folder are followed, and what it found.
struct Walk<'a> {
    root: PathBuf,
    skip: Option<&'a Path>,
    follow_links: bool,
    found: &'a mut Vec<PathBuf>,
    skipped_links: &'a mut Vec<PathBuf>,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path) -> Result<()> {
        for entry in fs::read_dir(dir).map_err(Error::io("reading directory", dir))? {
            let entry = entry.map_err(Error::io("reading directory", dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue; // hidden files and folders
            }
            let path = entry.path();
            let file_type = entry.file_type().map_err(Error::io("reading", &path))?;
            if file_type.is_dir() {
                let is_skipped = self
                    .skip
                    .is_some_and(|s| fs::canonicalize(&path).is_ok_and(|c| c == s));
                if !is_skipped {
                    self.dir(&path)?;
                }
            } else if file_type.is_file() && is_input_name(&name) {
                self.found.push(path);
            } else if file_type.is_symlink() && is_input_name(&name) {
                // Links to files inside the folder are read; a link leading out of it (to /etc/shadow, say)
                // only with --follow-links. Links to folders are never followed (no cycles).
                let Ok(target) = fs::canonicalize(&path) else {
                    continue;
                };
                if !fs::metadata(&target).is_ok_and(|m| m.is_file()) {
                    continue;
                }
                if self.follow_links || target.starts_with(&self.root) {
                    self.found.push(path);
                } else {
                    self.skipped_links.push(path);
                }
            }
        }
        Ok(())
    }
}

/// What a run reads: its sources, in order; the folders and prefixes that held no input file (a late export:
/// the run loads nothing from them, and says so); and the links of its input folders that lead out of them and
/// were not followed (said too).
#[derive(Debug)]
pub struct Listing {
    pub sources: Vec<Source>,
    pub empty: Vec<String>,
    pub skipped_links: Vec<PathBuf>,
}

/// Expands the command-line inputs into the list of sources, in the order a run reads them: standard input
/// first (if `-` is given), then every file and object, in byte-wise sorted path (or URL) order, each once.
/// Directory and prefix walks never enter `output` (the dataset), so `load data/ -o data/out` does not read
/// its own reports and rejects.
pub fn discover(args: &[PathBuf], output: &Output, follow_links: bool) -> Result<Listing> {
    let skip = output.local().and_then(|o| fs::canonicalize(o).ok());
    let mut stdin = false;
    let mut files = Vec::new();
    let mut skipped_links = Vec::new();
    let mut empty = Vec::new();
    let mut objects = Vec::new();
    for arg in args {
        if arg.as_os_str() == "-" {
            stdin = true;
            continue;
        }
        if let Some(url) = arg.to_str().filter(|a| store::is_url(a)) {
            let found = discover_objects(url, output.url())?;
            if found.is_empty() {
                empty.push(url.to_string());
            }
            objects.extend(found);
            continue;
        }
        let meta = fs::metadata(arg).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::InputNotFound(arg.clone()),
            _ => Error::io("reading", arg)(e),
        })?;
        if meta.is_dir() {
            let before = files.len();
            let mut walk = Walk {
                root: fs::canonicalize(arg).map_err(Error::io("reading", arg))?,
                skip: skip.as_deref(),
                follow_links,
                found: &mut files,
                skipped_links: &mut skipped_links,
            };
            walk.dir(arg)?;
            if files.len() == before {
                empty.push(arg.display().to_string());
            }
        } else {
            files.push(arg.clone());
        }
    }
    let mut named: Vec<(Vec<u8>, Source)> = files
        .into_iter()
        .map(|p| (path_bytes(&p), Source::File(p)))
        .chain(objects.into_iter().map(|o| (o.name().into_bytes(), o)))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.dedup_by(|a, b| a.0 == b.0);
    let mut sources: Vec<Source> = Vec::with_capacity(named.len() + 1);
    if stdin {
        sources.push(Source::Stdin);
    }
    sources.extend(named.into_iter().map(|(_, s)| s));
    skipped_links.sort();
    Ok(Listing {
        sources,
        empty,
        skipped_links,
    })
}

/// The objects a URL names: the object itself, or (a prefix, like a folder) every object under it whose name a
/// directory walk would take, hidden names skipped, never under `output`.
fn discover_objects(url: &str, output: Option<&str>) -> Result<Vec<Source>> {
    let location = Location::parse(url)?;
    let as_object = |location: Location, meta: object_store::ObjectMeta| Source::Object {
        location,
        size: meta.size,
        e_tag: meta.e_tag,
    };
    if !url.ends_with('/')
        && let Some(meta) = location.head()?
    {
        return Ok(vec![as_object(location, meta)]);
    }
    let base = location.path.as_ref().to_string();
    let skip = match output {
        Some(o) => Some(format!("{}/", Location::parse(o)?.url)),
        None => None,
    };
    let mut found = Vec::new();
    for meta in location.list()? {
        let rel = meta
            .location
            .as_ref()
            .strip_prefix(base.as_str())
            .unwrap_or(meta.location.as_ref())
            .trim_start_matches('/')
            .to_string();
        let hidden = rel.split('/').any(|part| part.starts_with('.'));
        let name = rel.rsplit('/').next().unwrap_or_default().to_string();
        let object = location.child(meta.location.clone());
        let in_output = skip.as_ref().is_some_and(|s| object.url.starts_with(s));
        if !hidden && !in_output && is_input_name(&name) {
            found.push(as_object(object, meta));
        }
    }
    // Nothing there. A name that can only be a file (`.../nope.gz`) is a mistake; a folder-like prefix is a
    // late export, which loads nothing.
    let last = url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if found.is_empty() && !url.ends_with('/') && is_input_name(last) {
        return Err(Error::InputNotFound(PathBuf::from(url)));
    }
    Ok(found)
}

/// Replaces standard input among `sources` by a copy of it in `dir`, so that it can be read more than once.
pub fn spool_stdin(sources: &mut [Source], dir: &Path) -> Result<()> {
    for s in sources.iter_mut().filter(|s| matches!(s, Source::Stdin)) {
        let path = dir.join("stdin");
        let mut file = File::create(&path).map_err(Error::io("creating", &path))?;
        io::copy(&mut io::stdin().lock(), &mut file)
            .map_err(Error::io("copying standard input to", &path))?;
        *s = Source::SpooledStdin(path);
    }
    Ok(())
}

/// Counts the bytes read through it (compressed bytes, for progress and error offsets).
pub struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An opened input: decompressed bytes, and a counter of the raw bytes read so far.
pub struct Opened {
    pub reader: Box<dyn Read + Send>,
    pub compression: Compression,
    pub raw_bytes_read: Arc<AtomicU64>,
}

/// Opens a source and wraps it in the decoder its first bytes call for. gzip is read as multi-member (the
/// concatenation of gzip files is one stream); zstd reads every frame.
pub fn open(source: &Source) -> Result<Opened> {
    let raw: Box<dyn Read + Send> = match source {
        Source::Stdin => Box::new(io::stdin()),
        Source::File(p) | Source::SpooledStdin(p) => {
            Box::new(File::open(p).map_err(Error::io("opening", p))?)
        }
        Source::Object { location, .. } => Box::new(location.open_stream()?),
    };
    let count = Arc::new(AtomicU64::new(0));
    let mut buffered = BufReader::with_capacity(
        256 * 1024,
        CountingReader {
            inner: raw,
            count: count.clone(),
        },
    );
    let head = loop {
        match buffered.fill_buf() {
            Ok(h) => break h,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("reading", source.name())(e)),
        }
    };
    let compression = Compression::detect(head);
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(Error::io("opening zstd stream", source.name()))?,
        ),
    };
    Ok(Opened {
        reader,
        compression,
        raw_bytes_read: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(p: &Path) -> Output {
        Output::Local(p.to_path_buf())
    }

    #[test]
    fn input_names() {
        for ok in [
            "a.json",
            "a.jsonl",
            "a.ndjson",
            "a.json.gz",
            "a.ndjson.zst",
            "A.JSONL.GZ",
            "x.y.json",
            // Segment's S3 export: <epoch-ms>.<uuid>.gz
            "1709254800000.2f9d6c1e-8e1f-4d2a-9c55-0c3f1e7b9a10.gz",
            "a.gz",
            "part-0001.zst",
            "export.txt.gz",
        ] {
            assert!(is_input_name(ok), "{ok}");
        }
        for no in [
            ".a.json",
            "a.txt",
            "a.json.bz2",
            ".gz",
            ".1709254800000.x.gz",
            "json",
            ".json",
            "a.json.gz.tmp",
            "a.jsonx",
            "a.gzip",
        ] {
            assert!(!is_input_name(no), "{no}");
        }
    }

    #[test]
    fn compression_is_sniffed() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"{\"type\""), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
    }

    #[test]
    fn discovery_walks_sorts_and_skips_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("b/.hidden")).unwrap();
        fs::create_dir_all(d.join("a")).unwrap();
        for f in [
            "b/2.json",
            "a/z.ndjson.gz",
            "a/Z.jsonl",
            "b/.h.json",
            "b/.hidden/x.json",
            "a/notes.txt",
            "b/10.json",
        ] {
            fs::write(d.join(f), b"").unwrap();
        }
        let got: Vec<String> = discover(
            &[d.to_path_buf(), PathBuf::from("-")],
            &local(&d.join("no-output")),
            false,
        )
        .unwrap()
        .sources
        .iter()
        .map(|s| s.name().replace(&d.display().to_string(), ""))
        .collect();
        assert_eq!(
            got,
            [
                "-",
                "/a/Z.jsonl",
                "/a/z.ndjson.gz",
                "/b/10.json",
                "/b/2.json"
            ]
        );
        // An explicitly named file is read whatever its name; naming it twice reads it once.
        let notes = d.join("a/notes.txt");
        let out = d.join("out");
        assert_eq!(
            discover(&[notes.clone(), notes], &local(&out), false)
                .unwrap()
                .sources
                .len(),
            1
        );
        assert!(matches!(
            discover(&[d.join("missing")], &local(&out), false),
            Err(Error::InputNotFound(_))
        ));
        fs::create_dir(d.join("empty")).unwrap();
        let l = discover(&[d.join("empty")], &local(&out), false).unwrap();
        assert!(l.sources.is_empty());
        assert_eq!(l.empty, [d.join("empty").display().to_string()]);
        // The output folder is never walked into, even when it sits inside an input folder.
        fs::create_dir_all(d.join("a/out/_runs")).unwrap();
        fs::write(d.join("a/out/_runs/r.json"), b"{}").unwrap();
        let got = discover(&[d.join("a")], &local(&d.join("a/out")), false)
            .unwrap()
            .sources;
        assert!(got.iter().all(|s| !s.name().contains("_runs")), "{got:?}");
        assert_eq!(
            discover(&[d.join("a")], &local(&d.join("elsewhere")), false)
                .unwrap()
                .sources
                .len(),
            3
        );
    }

    fn read_all(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.bin");
        fs::write(&p, bytes).unwrap();
        let mut out = Vec::new();
        open(&Source::File(p))
            .unwrap()
            .reader
            .read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn multi_member_gzip_and_multi_frame_zstd() {
        use std::io::Write;
        let mut gz = Vec::new();
        for part in [&b"a\n"[..], b"b\n"] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            gz.extend(e.finish().unwrap());
        }
        assert_eq!(read_all(&gz).unwrap(), b"a\nb\n");
        let mut zs = zstd::encode_all(&b"c\n"[..], 1).unwrap();
        zs.extend(zstd::encode_all(&b"d\n"[..], 1).unwrap());
        assert_eq!(read_all(&zs).unwrap(), b"c\nd\n");
        assert_eq!(read_all(b"plain\n").unwrap(), b"plain\n");
    }

    #[test]
    fn truncated_or_corrupt_compressed_input_is_an_error() {
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&vec![b'x'; 100_000]).unwrap();
            e.finish().unwrap()
        };
        assert!(read_all(&gz[..gz.len() / 2]).is_err());
        let mut corrupt = gz.clone();
        corrupt[20] ^= 0xff;
        corrupt[21] ^= 0xff;
        assert!(read_all(&corrupt).is_err());
        let zs = zstd::encode_all(&vec![b'y'; 100_000][..], 3).unwrap();
        assert!(read_all(&zs[..zs.len() - 3]).is_err());
    }

    #[test]
    fn links_leading_out_of_an_input_folder_are_followed_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("in/sub")).unwrap();
        fs::write(d.join("secret.json"), b"{}").unwrap();
        fs::write(d.join("in/real.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(d.join("secret.json"), d.join("in/leak.json")).unwrap();
        std::os::unix::fs::symlink(d.join("in/real.json"), d.join("in/sub/inside.json")).unwrap();
        std::os::unix::fs::symlink(d, d.join("in/sub/loop")).unwrap();
        let names = |l: &Listing| -> Vec<String> {
            l.sources
                .iter()
                .map(|s| s.name().replace(&d.display().to_string(), ""))
                .collect()
        };
        let l = discover(&[d.join("in")], &local(&d.join("out")), false).unwrap();
        assert_eq!(names(&l), ["/in/real.json", "/in/sub/inside.json"]);
        assert_eq!(l.skipped_links, [d.join("in/leak.json")]);
        let l = discover(&[d.join("in")], &local(&d.join("out")), true).unwrap();
        assert_eq!(
            names(&l),
            ["/in/leak.json", "/in/real.json", "/in/sub/inside.json"]
        );
        assert!(l.skipped_links.is_empty());
        // A file named on the command line is the user's choice: read, link or not.
        let l = discover(&[d.join("in/leak.json")], &local(&d.join("out")), false).unwrap();
        assert_eq!(names(&l), ["/in/leak.json"]);
    }
}
