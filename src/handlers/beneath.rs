//! Opening files only beneath a root directory, for the `static` handler's `ServeDir`.
//!
//! Every path is resolved by the kernel with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! relative to the root's descriptor, so no `..`, symlink or magic link (`/proc/self/fd/...`) can
//! lead out of the root, not even one swapped in between a check and the open. An absolute symlink
//! that stays inside the root is followed through its canonical path, opened with no symlinks
//! allowed at all. Anything outside the root is "not found", and so is anything that is neither a
//! regular file nor a directory (a FIFO or a device is never read).
//!
//! Files are opened and read on the serving thread itself, not handed to tokio's blocking pool:
//! served files are local and usually in the page cache, where a read takes a few microseconds,
//! while each hop to a pool thread and back costs more than that in thread wake-ups (measured:
//! the pool made small static files 4.7x slower than nginx, which reads inline the same way). A
//! read from a cold disk holds that thread for the read's duration, as it does in nginx.

use std::ffi::OsStr;
use std::fs::File as StdFile;
use std::future::{ready, Ready};
use std::io::{self, Read, Seek};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower_http::services::fs::{Backend, File};

/// A [`Backend`] confined to one directory, or (`follow_symlinks = true`) free to follow
/// symlinks anywhere.
#[derive(Debug)]
pub struct Beneath {
    root: Arc<Root>,
    /// The regular file the last `metadata` call opened, kept for the `open` of the same path
    /// that follows it: `ServeDir` asks for a path's metadata (is it a directory?) and then opens
    /// it, and one open instead of two saves three system calls per file served. Each clone
    /// starts empty, and `ServeDir` clones its backend for every request, so this never outlives
    /// the request that opened it.
    opened: Mutex<Option<Opened>>,
}

type Opened = (PathBuf, StdFile, std::fs::Metadata);

impl Clone for Beneath {
    fn clone(&self) -> Beneath {
        Beneath {
            root: self.root.clone(),
            opened: Mutex::new(None),
        }
    }
}

#[derive(Debug)]
struct Root {
    /// Canonical path; `ServeDir` asks for paths below it.
    path: PathBuf,
    fd: OwnedFd,
    /// False with `follow_symlinks = true`: plain opens, symlinks followed wherever they lead.
    confined: bool,
}

impl Beneath {
    /// Opens the (canonical, existing) directory `root`.
    pub fn new(root: &Path, confined: bool) -> io::Result<Beneath> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_PATH | nix::libc::O_DIRECTORY)
            .open(root)?;
        Ok(Beneath {
            root: Arc::new(Root {
                path: root.to_path_buf(),
                fd: dir.into(),
                confined,
            }),
            opened: Mutex::new(None),
        })
    }
}

impl Backend for Beneath {
    type File = BeneathFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = Ready<io::Result<BeneathFile>>;
    type MetadataFuture = Ready<io::Result<std::fs::Metadata>>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        let kept = self.opened().take();
        if let Some((_, file, meta)) = kept.filter(|(p, ..)| p.as_os_str() == path.as_os_str()) {
            return ready(Ok(BeneathFile::new((file, meta))));
        }
        ready(self.root.open_file(&path).map(BeneathFile::new))
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        ready(self.root.metadata(&path).map(|(meta, file)| {
            *self.opened() = file.map(|file| (path, file, meta.clone()));
            meta
        }))
    }
}

impl Beneath {
    fn opened(&self) -> std::sync::MutexGuard<'_, Option<Opened>> {
        self.opened.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How files are opened for reading. O_NONBLOCK: opening a FIFO must not hang (it is refused
/// once opened); no effect on files.
const READ: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_NONBLOCK);

impl Root {
    /// A regular file, opened for reading.
    fn open_file(&self, path: &Path) -> io::Result<(StdFile, std::fs::Metadata)> {
        let file = StdFile::from(self.open(path, READ)?);
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok((file, meta))
    }

    /// The metadata of a regular file or a directory; a regular file comes opened for reading
    /// too, when it can be (see `Beneath::opened`).
    fn metadata(&self, path: &Path) -> io::Result<(std::fs::Metadata, Option<StdFile>)> {
        match self.open(path, READ) {
            Ok(fd) => {
                let file = StdFile::from(fd);
                let meta = file.metadata()?;
                return match (meta.is_file(), meta.is_dir()) {
                    (true, _) => Ok((meta, Some(file))),
                    (_, true) => Ok((meta, None)),
                    _ => Err(not_found()),
                };
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
            // Not readable (no permission): its metadata is still there to be had.
            Err(_) => {}
        }
        let meta = StdFile::from(self.open(path, OFlag::O_PATH)?).metadata()?;
        if meta.is_file() || meta.is_dir() {
            Ok((meta, None))
        } else {
            Err(not_found())
        }
    }

    fn open(&self, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        if !self.confined {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags.bits())
                .open(path)?;
            return Ok(file.into());
        }
        let beneath = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        match self.openat2(self.relative(path)?, flags, beneath) {
            // Leads out of the root, or through an absolute symlink: decide by where it ends.
            Err(Errno::EXDEV) => self.open_canonical(path, flags),
            // No openat2 (Linux before 5.6, or a seccomp filter): check, then open.
            Err(Errno::ENOSYS) => self.open_checked(path, flags),
            other => other.map_err(io_error),
        }
    }

    /// Opens the canonical form of `path` if it is inside the root, refusing any symlink met on
    /// the way (one that appeared since the canonicalization).
    fn open_canonical(&self, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        let canonical = std::fs::canonicalize(path)?;
        let no_links = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
        self.openat2(self.relative(&canonical)?, flags, no_links)
            .map_err(io_error)
    }

    /// Without openat2: canonicalize, check containment, open the canonical path.
    fn open_checked(&self, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        let canonical = std::fs::canonicalize(path)?;
        self.relative(&canonical)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((flags | OFlag::O_NOFOLLOW).bits())
            .open(&canonical)?;
        Ok(file.into())
    }

    fn openat2(
        &self,
        relative: &Path,
        flags: OFlag,
        resolve: ResolveFlag,
    ) -> Result<OwnedFd, Errno> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(Mode::empty())
            .resolve(resolve);
        openat2(&self.fd, relative, how)
    }

    /// `path` relative to the root ("." for the root itself); outside the root is not found.
    fn relative<'a>(&self, path: &'a Path) -> io::Result<&'a Path> {
        // `ServeDir` asks for the root joined with the request's path: a byte comparison finds
        // the part below the root without splitting both paths into components.
        let below = path
            .as_os_str()
            .as_bytes()
            .strip_prefix(self.path.as_os_str().as_bytes())
            .and_then(|rest| rest.strip_prefix(b"/"));
        if let Some(rest) = below.filter(|r| !r.is_empty() && !r.starts_with(b"/")) {
            return Ok(Path::new(OsStr::from_bytes(rest)));
        }
        match path.strip_prefix(&self.path) {
            Ok(rel) if rel.as_os_str().is_empty() => Ok(Path::new(".")),
            Ok(rel) => Ok(rel),
            Err(_) => Err(not_found()),
        }
    }
}

fn not_found() -> io::Error {
    io::ErrorKind::NotFound.into()
}

/// Escapes and refused symlinks read as "not found"; other errors keep their meaning.
fn io_error(errno: Errno) -> io::Error {
    match errno {
        Errno::EXDEV | Errno::ELOOP => not_found(),
        e => e.into(),
    }
}

/// An open file below the root, read and sought on the calling thread (see the module docs).
///
/// The file is served as it was when opened: its metadata (what `ServeDir` takes the
/// Content-Length, ETag and Last-Modified from) is the one read right after opening, and reading
/// ends at that length. So no read is spent finding the end, and a file appended to meanwhile
/// is not sent longer than its Content-Length says (one cut short shows as a short body, as
/// before). Reads are sized to what is left of that length, not to the whole buffer offered:
/// safe `Read` needs an initialized buffer, and zeroing `ServeDir`'s 64 KiB chunk for every
/// 1 KiB file was half the CPU time of serving one.
#[derive(Debug)]
pub struct BeneathFile {
    file: StdFile,
    meta: std::fs::Metadata,
    /// The read position.
    pos: u64,
}

impl BeneathFile {
    fn new((file, meta): (StdFile, std::fs::Metadata)) -> BeneathFile {
        BeneathFile { file, meta, pos: 0 }
    }
}

impl AsyncRead for BeneathFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.meta.len().saturating_sub(self.pos);
        let want = usize::try_from(left).map_or(buf.remaining(), |l| l.min(buf.remaining()));
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        let n = match self.file.read(buf.initialize_unfilled_to(want)) {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(e)),
        };
        buf.advance(n);
        self.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for BeneathFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        self.pos = self.file.seek(position)?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

impl File for BeneathFile {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> = Ready<io::Result<std::fs::Metadata>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        ready(Ok(self.meta.clone()))
    }
}
