//! Opening files only beneath a root directory, for the `static` handler's `ServeDir`.
//!
//! Every path is resolved by the kernel with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! relative to the root's descriptor, so no `..`, symlink or magic link (`/proc/self/fd/...`) can
//! lead out of the root, not even one swapped in between a check and the open. An absolute symlink
//! that stays inside the root is followed through its canonical path, opened with no symlinks
//! allowed at all. Anything outside the root is "not found", and so is anything that is neither a
//! regular file nor a directory (a FIFO or a device is never read).
//!
//! A regular file stays open after its request, for the next requests of the same path (at most
//! 64 per root, the least recently used closed first, and never more than an eighth of the
//! open-files limit in all): each request then checks with one `stat` of the path (beneath the
//! root, not following a symlink in its last component) that it still names the very same,
//! unchanged file — device, inode, type, permissions, length, modification and change time —
//! and reads the kept descriptor at its own offset. Anything else (the file replaced, written,
//! renamed, deleted, chmod-ed, or a symlink in its place) closes it and opens the path anew, as
//! above. A request never sees other content than a fresh open would give it, and a file that
//! was never opened beneath the root is never served; what is saved is the open and close of
//! every request (3.3 µs → 1.5 µs per 1 KiB file, measured in C on this machine's kernel).
//!
//! A kept file nobody asks for is closed within a minute of its last request (a sweep every
//! 30 s closes those not asked for since the one before; it runs only while files are kept), so
//! a file deleted or replaced on disk does not hold its space for longer than that. It is
//! closed at once when its path is next requested, when the root closes it for newer files, or
//! when the launcher exits.
//!
//! Files are opened and read on the serving thread itself, not handed to tokio's blocking pool:
//! served files are local and usually in the page cache, where a read takes a few microseconds,
//! while each hop to a pool thread and back costs more than that in thread wake-ups (measured:
//! the pool made small static files 4.7x slower than nginx, which reads inline the same way). A
//! read from a cold disk holds that thread for the read's duration, as it does in nginx.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File as StdFile;
use std::future::{ready, Ready};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower_http::services::fs::{Backend, File, Metadata};

/// A [`Backend`] confined to one directory, or (`follow_symlinks = true`) free to follow
/// symlinks anywhere.
#[derive(Debug)]
pub struct Beneath {
    root: Arc<Root>,
    /// The regular file the last `metadata` call opened, kept for the `open` of the same path
    /// that follows it: `ServeDir` asks for a path's metadata (is it a directory?) and then opens
    /// it, and this saves looking it up twice. Each clone starts empty, and `ServeDir` clones its
    /// backend for every request, so this never outlives the request that opened it.
    opened: Mutex<Option<Opened>>,
}

type Opened = (PathBuf, Arc<StdFile>, FileInfo);

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
    /// Itself, for the sweep of kept files (which ends when the root is dropped).
    me: Weak<Root>,
    /// Canonical path; `ServeDir` asks for paths below it.
    path: PathBuf,
    fd: OwnedFd,
    /// False with `follow_symlinks = true`: plain opens, symlinks followed wherever they lead.
    confined: bool,
    /// Regular files opened for earlier requests (see the module docs).
    kept: Mutex<KeptFiles>,
}

impl Beneath {
    /// Opens the (canonical, existing) directory `root`.
    pub fn new(root: &Path, confined: bool) -> io::Result<Beneath> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_PATH | nix::libc::O_DIRECTORY)
            .open(root)?;
        let fd = OwnedFd::from(dir);
        Ok(Beneath {
            root: Arc::new_cyclic(|me| Root {
                me: me.clone(),
                path: root.to_path_buf(),
                fd,
                confined,
                kept: Mutex::default(),
            }),
            opened: Mutex::new(None),
        })
    }
}

impl Backend for Beneath {
    type File = BeneathFile;
    type Metadata = FileInfo;
    type OpenFuture = Ready<io::Result<BeneathFile>>;
    type MetadataFuture = Ready<io::Result<FileInfo>>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        let kept = self.opened().take();
        if let Some((_, file, info)) = kept.filter(|(p, ..)| p.as_os_str() == path.as_os_str()) {
            return ready(Ok(BeneathFile::new(file, info)));
        }
        ready(
            self.root
                .regular_file(&path)
                .map(|(file, info)| BeneathFile::new(file, info)),
        )
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        ready(self.root.metadata(&path).map(|(info, file)| {
            *self.opened() = file.map(|file| (path, file, info));
            info
        }))
    }
}

impl Beneath {
    fn opened(&self) -> MutexGuard<'_, Option<Opened>> {
        self.opened.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How files are opened for reading. O_NONBLOCK: opening a FIFO must not hang (it is refused
/// once opened); no effect on files.
const READ: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_NONBLOCK);

/// What `ServeDir` learns of a file (is it a directory, its length and modification time): the
/// `stat` read when it was opened, or when a kept file was found unchanged.
#[derive(Debug, Clone, Copy)]
pub struct FileInfo(FileStat);

impl FileInfo {
    fn kind(&self) -> SFlag {
        SFlag::from_bits_truncate(self.0.st_mode & SFlag::S_IFMT.bits())
    }

    fn is_file(&self) -> bool {
        self.kind() == SFlag::S_IFREG
    }

    /// The very same file, unchanged: device and inode, type and permissions, length, and
    /// modification and change times (the change time moves with any write, chmod, chown,
    /// link count change or rename of the file).
    fn same_file(&self, other: &FileInfo) -> bool {
        let (a, b) = (&self.0, &other.0);
        (a.st_dev, a.st_ino, a.st_mode, a.st_size) == (b.st_dev, b.st_ino, b.st_mode, b.st_size)
            && (a.st_mtime, a.st_mtime_nsec) == (b.st_mtime, b.st_mtime_nsec)
            && (a.st_ctime, a.st_ctime_nsec) == (b.st_ctime, b.st_ctime_nsec)
    }
}

impl Metadata for FileInfo {
    fn is_dir(&self) -> bool {
        self.kind() == SFlag::S_IFDIR
    }

    /// As `std::fs::Metadata::modified` reads it (so ETags stay what they were).
    fn modified(&self) -> io::Result<SystemTime> {
        let (secs, nanos) = (self.0.st_mtime, self.0.st_mtime_nsec);
        let nanos = Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
        let time = match u64::try_from(secs) {
            Ok(secs) => SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
            Err(_) => SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs())),
        };
        time.and_then(|t| t.checked_add(nanos))
            .ok_or_else(|| io::Error::other("the file's modification time is out of range"))
    }

    fn len(&self) -> u64 {
        u64::try_from(self.0.st_size).unwrap_or(0)
    }
}

/// Regular files opened for earlier requests, kept open while their path still names the same
/// unchanged file (see the module docs), at most [`KEEP_PER_ROOT`] per root.
#[derive(Debug, Default)]
struct KeptFiles {
    files: HashMap<PathBuf, Kept>,
    /// Counts uses, to push out the least recently used file when full, and to tell which files
    /// were asked for since the last sweep.
    clock: u64,
    /// `clock` at the last sweep (or when the sweeping started): files used at or before it
    /// have not been asked for since.
    swept_at: u64,
    /// The sweep task runs (see [`SWEEP_EVERY`]); false once it found no file left to keep.
    sweeping: bool,
}

#[derive(Debug)]
struct Kept {
    file: Arc<StdFile>,
    info: FileInfo,
    used: u64,
}

/// Files kept open per static root: a site's most requested files.
const KEEP_PER_ROOT: usize = 64;

/// How often a root with kept files closes those not asked for since its last sweep: a file is
/// closed between one and two of these after its last request.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Files kept open in the whole process: an eighth of the open-files limit, at most 1024, so
/// kept files never take the descriptors connections need.
fn keep_at_most() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(0, |(soft, _)| {
                usize::try_from(soft / 8).unwrap_or(usize::MAX)
            })
            .min(1024)
    })
}

/// Files kept open now, in all roots.
static KEPT_NOW: AtomicUsize = AtomicUsize::new(0);

impl Drop for Kept {
    fn drop(&mut self) {
        KEPT_NOW.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Root {
    fn kept(&self) -> MutexGuard<'_, KeptFiles> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A regular file, opened for reading: a kept one if its path still names it.
    fn regular_file(&self, path: &Path) -> io::Result<(Arc<StdFile>, FileInfo)> {
        if let Some(kept) = self.reuse(path) {
            return Ok(kept);
        }
        match self.open_for_reading(path)? {
            (info, Some(file)) => Ok((file, info)),
            (_, None) => Err(not_found()),
        }
    }

    /// The metadata of a regular file or a directory; a regular file comes opened for reading
    /// too, when it can be (see `Beneath::opened`).
    fn metadata(&self, path: &Path) -> io::Result<(FileInfo, Option<Arc<StdFile>>)> {
        if let Some((file, info)) = self.reuse(path) {
            return Ok((info, Some(file)));
        }
        match self.open_for_reading(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {}
            opened => return opened,
        }
        // Not readable (no permission): its metadata is still there to be had.
        let (fd, _) = self.open(path, OFlag::O_PATH)?;
        let info = FileInfo(fstat(&fd)?);
        if info.is_file() || info.is_dir() {
            Ok((info, None))
        } else {
            Err(not_found())
        }
    }

    /// Opens `path` for reading: a regular file comes opened (and is kept for the next requests),
    /// a directory comes as its metadata alone, anything else is not found.
    fn open_for_reading(&self, path: &Path) -> io::Result<(FileInfo, Option<Arc<StdFile>>)> {
        let (fd, direct) = self.open(path, READ)?;
        let file = StdFile::from(fd);
        let info = FileInfo(fstat(&file)?);
        if info.is_dir() {
            return Ok((info, None));
        }
        if !info.is_file() {
            return Err(not_found());
        }
        let file = Arc::new(file);
        if direct {
            self.keep(path, &file, info);
        }
        Ok((info, Some(file)))
    }

    /// The kept file for `path`, if `path` still names it unchanged; else it is closed.
    fn reuse(&self, path: &Path) -> Option<(Arc<StdFile>, FileInfo)> {
        let (file, info) = {
            let mut kept = self.kept();
            kept.clock += 1;
            let clock = kept.clock;
            let entry = kept.files.get_mut(path)?;
            entry.used = clock;
            (entry.file.clone(), entry.info)
        };
        // Outside the lock: another thread's request may look up its own file meanwhile.
        if self.stat(path).is_ok_and(|now| now.same_file(&info)) {
            return Some((file, info));
        }
        let mut kept = self.kept();
        // Unless another request already put a newer file in its place.
        if kept
            .files
            .get(path)
            .is_some_and(|k| Arc::ptr_eq(&k.file, &file))
        {
            kept.files.remove(path);
        }
        None
    }

    /// What `path` names now, found the way it was opened: beneath the root without following
    /// a symlink in its last component (a symlink put in place of a kept file is never the
    /// same file), or anywhere with `follow_symlinks = true`.
    fn stat(&self, path: &Path) -> io::Result<FileInfo> {
        let stat = if self.confined {
            fstatat(&self.fd, self.relative(path)?, AtFlags::AT_SYMLINK_NOFOLLOW)
        } else {
            fstatat(&self.fd, path, AtFlags::empty())
        };
        stat.map(FileInfo).map_err(io::Error::from)
    }

    /// Keeps `file`, just opened for `path`, for the next requests.
    fn keep(&self, path: &Path, file: &Arc<StdFile>, info: FileInfo) {
        let mut kept = self.kept();
        if kept.files.len() >= KEEP_PER_ROOT && !kept.files.contains_key(path) {
            let oldest = kept
                .files
                .iter()
                .min_by_key(|(_, k)| k.used)
                .map(|(p, _)| p.clone());
            if let Some(oldest) = oldest {
                kept.files.remove(&oldest);
            }
        }
        if KEPT_NOW.load(Ordering::Relaxed) >= keep_at_most() {
            return;
        }
        KEPT_NOW.fetch_add(1, Ordering::Relaxed);
        kept.clock += 1;
        let used = kept.clock;
        kept.files.insert(
            path.to_path_buf(),
            Kept {
                file: file.clone(),
                info,
                used,
            },
        );
        if !kept.sweeping {
            self.start_sweeping(&mut kept);
        }
    }

    /// Starts the sweep of this root's kept files (see [`SWEEP_EVERY`]). Without a runtime
    /// (unit tests) kept files are closed only for newer ones, or with the root.
    fn start_sweeping(&self, kept: &mut KeptFiles) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        kept.sweeping = true;
        kept.swept_at = kept.clock;
        let root = self.me.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(root) = root.upgrade() else { return };
                if !root.sweep() {
                    return;
                }
            }
        });
    }

    /// Closes the kept files not asked for since the last sweep (a request reading one keeps
    /// its descriptor until it is done). False when no file is left kept: the sweeping stops,
    /// and the next kept file starts it again.
    fn sweep(&self) -> bool {
        let mut kept = self.kept();
        let since = kept.swept_at;
        kept.files.retain(|_, k| k.used > since);
        kept.swept_at = kept.clock;
        kept.sweeping = !kept.files.is_empty();
        kept.sweeping
    }

    /// Opens `path`; true when it was opened by that path itself (not through the canonical
    /// path of an absolute symlink, nor without openat2), so that [`Root::stat`] finds the same
    /// file by it.
    fn open(&self, path: &Path, flags: OFlag) -> io::Result<(OwnedFd, bool)> {
        if !self.confined {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags.bits())
                .open(path)?;
            return Ok((file.into(), true));
        }
        let beneath = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        match self.openat2(self.relative(path)?, flags, beneath) {
            Ok(fd) => Ok((fd, true)),
            // Leads out of the root, or through an absolute symlink: decide by where it ends.
            Err(Errno::EXDEV) => Ok((self.open_canonical(path, flags)?, false)),
            // No openat2 (Linux before 5.6, or a seccomp filter): check, then open.
            Err(Errno::ENOSYS) => Ok((self.open_checked(path, flags)?, false)),
            Err(e) => Err(io_error(e)),
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
/// 1 KiB file was half the CPU time of serving one. Reads are positioned (`pread`) from this
/// request's own offset: a kept file is shared by the requests that read it at the same time.
#[derive(Debug)]
pub struct BeneathFile {
    file: Arc<StdFile>,
    info: FileInfo,
    /// The read position.
    pos: u64,
}

impl BeneathFile {
    fn new(file: Arc<StdFile>, info: FileInfo) -> BeneathFile {
        BeneathFile { file, info, pos: 0 }
    }
}

impl AsyncRead for BeneathFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.info.len().saturating_sub(self.pos);
        let want = usize::try_from(left).map_or(buf.remaining(), |l| l.min(buf.remaining()));
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        let n = match self
            .file
            .read_at(buf.initialize_unfilled_to(want), self.pos)
        {
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
        let pos = match position {
            io::SeekFrom::Start(to) => Some(to),
            io::SeekFrom::Current(by) => self.pos.checked_add_signed(by),
            io::SeekFrom::End(by) => self.info.len().checked_add_signed(by),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a seek before the start of the file or past the largest offset",
            )
        })?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

impl File for BeneathFile {
    type Metadata = FileInfo;
    type MetadataFuture<'a> = Ready<io::Result<FileInfo>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        ready(Ok(self.info))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A root `site/` with `a.txt`, next to `outside/secret.txt`.
    fn site() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(root.join("a.txt"), "first\n").unwrap();
        std::fs::write(dir.path().join("outside/secret.txt"), "secret\n").unwrap();
        let root = std::fs::canonicalize(root).unwrap();
        (dir, root)
    }

    /// The file `metadata` opened for `path`, as a request's `ServeDir` gets it.
    fn opened(backend: &Beneath, path: &Path) -> io::Result<(Arc<StdFile>, FileInfo)> {
        let backend = backend.clone();
        let info = backend.root.metadata(path)?;
        let file = info.1.expect("a regular file comes opened");
        Ok((file, info.0))
    }

    #[test]
    fn an_unchanged_file_is_kept_open_for_the_next_request() {
        let (_dir, root) = site();
        let backend = Beneath::new(&root, true).unwrap();
        let path = root.join("a.txt");
        let (first, _) = opened(&backend, &path).unwrap();
        let (second, info) = opened(&backend, &path).unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "the kept descriptor is reused"
        );
        assert_eq!(info.len(), 6);
    }

    #[test]
    fn a_replaced_or_rewritten_file_is_opened_anew() {
        let (_dir, root) = site();
        let backend = Beneath::new(&root, true).unwrap();
        let path = root.join("a.txt");
        let (first, _) = opened(&backend, &path).unwrap();
        // Replaced by a rename: another inode.
        std::fs::write(root.join("new"), "second version\n").unwrap();
        std::fs::rename(root.join("new"), &path).unwrap();
        let (second, info) = opened(&backend, &path).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(info.len(), 15);
        // Rewritten in place: the same inode, another length.
        std::fs::write(&path, "3\n").unwrap();
        let (third, info) = opened(&backend, &path).unwrap();
        assert!(!Arc::ptr_eq(&second, &third));
        assert_eq!(info.len(), 2);
        // Deleted: not found, and no longer kept.
        std::fs::remove_file(&path).unwrap();
        let e = opened(&backend, &path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(backend.root.kept().files.is_empty());
    }

    #[test]
    fn a_symlink_out_of_the_root_in_place_of_a_kept_file_is_not_followed() {
        let (dir, root) = site();
        let path = root.join("a.txt");
        for confined in [true, false] {
            std::fs::write(&path, "first\n").unwrap();
            let backend = Beneath::new(&root, confined).unwrap();
            opened(&backend, &path).unwrap();
            std::fs::remove_file(&path).unwrap();
            symlink(dir.path().join("outside/secret.txt"), &path).unwrap();
            let result = opened(&backend, &path);
            if confined {
                assert_eq!(result.unwrap_err().kind(), io::ErrorKind::NotFound);
            } else {
                // follow_symlinks = true: the symlink's target, opened anew.
                assert_eq!(result.unwrap().1.len(), 7);
            }
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn concurrent_readers_of_a_kept_file_keep_their_own_offsets() {
        let (_dir, root) = site();
        let backend = Beneath::new(&root, true).unwrap();
        let path = root.join("a.txt");
        let (file, info) = opened(&backend, &path).unwrap();
        let (again, _) = opened(&backend, &path).unwrap();
        let mut one = BeneathFile::new(file, info);
        let mut two = BeneathFile::new(again, info);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut read = |f: &mut BeneathFile, n: usize| {
            let mut bytes = vec![0; n];
            let mut buf = ReadBuf::new(&mut bytes);
            let _ = Pin::new(f).poll_read(&mut cx, &mut buf);
            buf.filled().to_vec()
        };
        assert_eq!(read(&mut one, 3), b"fir");
        assert_eq!(read(&mut two, 2), b"fi");
        assert_eq!(read(&mut one, 10), b"st\n");
        Pin::new(&mut two)
            .start_seek(io::SeekFrom::End(-2))
            .unwrap();
        assert_eq!(read(&mut two, 10), b"t\n");
        assert!(Pin::new(&mut two)
            .start_seek(io::SeekFrom::Current(-10))
            .is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn kept_files_not_asked_for_are_closed_within_a_minute() {
        use tokio::time::sleep;
        let (_dir, root) = site();
        let backend = Beneath::new(&root, true).unwrap();
        let a = root.join("a.txt");
        let b = root.join("b.txt");
        std::fs::write(&b, "b\n").unwrap();
        let watch = |file: Arc<StdFile>| Arc::downgrade(&file);
        // 0 s: both opened and kept; the sweeps come at 30 s, 60 s, ...
        let a_file = watch(opened(&backend, &a).unwrap().0);
        let b_file = watch(opened(&backend, &b).unwrap().0);
        assert!(backend.root.kept().sweeping);
        sleep(Duration::from_secs(25)).await;
        opened(&backend, &b).unwrap();
        // 35 s: a, not asked for since it was opened, is closed; b, asked for at 25 s, is kept.
        sleep(Duration::from_secs(10)).await;
        assert!(a_file.upgrade().is_none(), "a.txt's descriptor is closed");
        assert!(b_file.upgrade().is_some(), "b.txt is still kept");
        assert!(!backend.root.kept().files.contains_key(&a));
        // 65 s: b, last asked for at 25 s, is closed too, and with nothing kept the sweep stops.
        sleep(Duration::from_secs(30)).await;
        assert!(b_file.upgrade().is_none(), "b.txt's descriptor is closed");
        {
            let kept = backend.root.kept();
            assert!(kept.files.is_empty() && !kept.sweeping);
        }
        // The next kept file starts it again.
        let a_again = watch(opened(&backend, &a).unwrap().0);
        assert!(backend.root.kept().sweeping);
        sleep(Duration::from_secs(61)).await;
        assert!(a_again.upgrade().is_none());
        assert!(backend.root.kept().files.is_empty());
    }

    #[test]
    fn kept_files_are_bounded_per_root_least_recently_used_first() {
        let (_dir, root) = site();
        let backend = Beneath::new(&root, true).unwrap();
        let a = root.join("a.txt");
        opened(&backend, &a).unwrap();
        for i in 0..KEEP_PER_ROOT + 5 {
            let path = root.join(format!("f{i}"));
            std::fs::write(&path, "x").unwrap();
            opened(&backend, &path).unwrap();
            // a.txt stays in use, so it is never the least recently used.
            opened(&backend, &a).unwrap();
        }
        let kept = backend.root.kept();
        assert_eq!(kept.files.len(), KEEP_PER_ROOT);
        assert!(kept.files.contains_key(&a));
        assert!(!kept.files.contains_key(&root.join("f0")));
    }
}
