//! Reading a file from a path someone else controls (a store on a USB stick, a bundle, the
//! state directory, a report spool): regular files only, read against a cap known before
//! reading. A FIFO, a device or a directory where a file belongs is an error that names what
//! it is, found without blocking (the file is opened non-blocking, so a FIFO with no writer
//! cannot hang the reader); a file larger than its cap is refused from its length before a
//! byte is read, and one that grows while it is read stops at the cap. Files that are ours
//! (the state directory's) are opened without following a symbolic link at their name.
//!
//! The errors are `std::io::Error`s, so the callers' own errors keep naming the path; a
//! missing file stays `ErrorKind::NotFound`.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Whether a symbolic link at the file's name is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// A file in someone else's tree (a store, a bundle path given on the command line).
    Follow,
    /// A file that is ours (the state directory, the report spool): a link there is refused.
    Refuse,
}

/// Opens `path` for reading if it is a regular file, and returns it with its length.
pub fn open_regular(path: &Path, links: Links) -> io::Result<(File, u64)> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| link_refused(e, links))?;
    let metadata = file.metadata()?;
    if !metadata.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {}, not a regular file", kind_of(&metadata.file_type())),
        ));
    }
    Ok((file, metadata.len()))
}

/// The whole of a regular file of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64, links: Links) -> io::Result<Vec<u8>> {
    let (file, length) = open_regular(path, links)?;
    read_opened(file, length, limit)
}

/// The whole of a file `open_regular` gave (with its `length`), at most `limit` bytes: a
/// file that grows past the cap while it is read is refused at the cap.
pub fn read_opened(file: File, length: u64, limit: u64) -> io::Result<Vec<u8>> {
    if length > limit {
        return Err(too_large(length, limit));
    }
    let mut bytes = Vec::with_capacity(length as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("grew past the {limit} bytes allowed for it while it was read"),
        ));
    }
    Ok(bytes)
}

/// Opens (creating it if missing) a file of ours that we rewrite in place, such as a lock
/// file: never through a symbolic link, only a regular file with no other name (a hard link
/// placed there would make us write someone else's file), close-on-exec. Nothing is
/// truncated here: the caller decides, once it knows the file is its own.
pub fn open_own_for_update(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| link_refused(e, Links::Refuse))?;
    let metadata = file.metadata()?;
    if !metadata.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {}, not a regular file", kind_of(&metadata.file_type())),
        ));
    }
    if std::os::unix::fs::MetadataExt::nlink(&metadata) != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "has another name (a hard link), so it may be someone else's file",
        ));
    }
    Ok(file)
}

/// `read_bounded` for text: invalid UTF-8 is an error.
pub fn read_bounded_text(path: &Path, limit: u64, links: Links) -> io::Result<String> {
    String::from_utf8(read_bounded(path, limit, links)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

fn too_large(length: u64, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("is {length} bytes, larger than the {limit} bytes allowed for it"),
    )
}

/// `O_NOFOLLOW` on a link fails with `ELOOP`: say what that means.
fn link_refused(error: io::Error, links: Links) -> io::Error {
    if links == Links::Refuse && error.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a symbolic link, which this file may not be",
        )
    } else {
        error
    }
}

/// What a file that is not a regular file is, for the error.
pub fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_files_are_never_opened_through_a_link_or_a_second_name() {
        let dir = temp_dir("own");
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("lock")).unwrap();
        let error = open_own_for_update(&dir.join("lock")).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        std::fs::hard_link(&victim, dir.join("lock2")).unwrap();
        let error = open_own_for_update(&dir.join("lock2")).unwrap_err();
        assert!(error.to_string().contains("hard link"), "{error}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        open_own_for_update(&dir.join("lock3")).unwrap();
        assert!(dir.join("lock3").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("diffota-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regular_files_within_the_cap_are_read() {
        let dir = temp_dir("read-ok");
        let path = dir.join("index");
        std::fs::write(&path, b"twelve bytes").unwrap();
        assert_eq!(
            read_bounded(&path, 12, Links::Refuse).unwrap(),
            b"twelve bytes"
        );
        let error = read_bounded(&path, 11, Links::Refuse).unwrap_err();
        assert!(
            error.to_string().contains("larger than the 11 bytes"),
            "{error}"
        );
        assert_eq!(
            read_bounded(&dir.join("missing"), 1, Links::Follow)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let dir = temp_dir("read-special");
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let error = read_bounded(&fifo, 1024, Links::Follow).unwrap_err();
        assert!(
            error.to_string().contains("is a FIFO, not a regular file"),
            "{error}"
        );
        let error = read_bounded(Path::new("/dev/zero"), 1024, Links::Follow).unwrap_err();
        assert!(error.to_string().contains("a character device"), "{error}");
        let error = read_bounded(&dir, 1024, Links::Follow).unwrap_err();
        assert!(error.to_string().contains("a directory"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_are_refused_only_where_the_file_is_ours() {
        let dir = temp_dir("read-link");
        std::fs::write(dir.join("target"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.join("target"), dir.join("link")).unwrap();
        assert_eq!(
            read_bounded(&dir.join("link"), 1, Links::Follow).unwrap(),
            b"x"
        );
        let error = read_bounded(&dir.join("link"), 1, Links::Refuse).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).unwrap();
        let error = read_bounded(&dir.join("zero"), 1, Links::Follow).unwrap_err();
        assert!(error.to_string().contains("character device"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
