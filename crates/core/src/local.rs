//! The same-node read protocol: a worker on the client's own node hands the
//! client open descriptors of its page files over a Unix domain socket
//! (`SCM_RIGHTS`), and the client reads and verifies the pages itself, so
//! warm bytes cross no TCP connection and no second process.
//!
//! This module holds what both ends must agree on: the messages, their
//! framing, and the node identity. The worker's server is
//! `alluxiofs-worker`'s `local` module; the client's side is
//! [`crate::client`]'s `local` module. `docs/protocol.md` describes the
//! protocol for other implementations.
//!
//! - **Same node.** A worker advertises its socket path (`/healthz`, its
//!   etcd record's `DomainSocketPath`, the embedded worker's state file).
//!   The client connects to that path and says hello; the worker answers
//!   with its id and the kernel's boot id ([`boot_id`]). The path is taken
//!   only when the socket is reachable and the boot ids are equal: true for
//!   containers of one node sharing the socket's directory, false for a
//!   worker on another host (or in a namespace that does not share it),
//!   whatever their IP addresses.
//! - **Who may read.** The worker checks the peer's uid with `SO_PEERCRED`
//!   (its own uid and the uids it is configured to allow) or the auth token
//!   in the hello; anyone else is refused and reads over HTTP. Descriptors
//!   are opened read-only by the worker, so the cache directories stay
//!   private.
//! - **Framing.** Every message is a little-endian `u32` length and that
//!   many bytes of JSON ([`Request`], [`Reply`]); a reply's descriptors
//!   travel as `SCM_RIGHTS` ancillary data of its first byte, in the order
//!   the reply lists them. One request, one reply, in turn, per connection.
//! - **What a descriptor proves.** Nothing by itself: the client checks
//!   every page's header (URL, version, index, page size) and checksum
//!   ([`crate::page_file`]) exactly as the worker does before a byte
//!   reaches the caller. A page file is written once (temporary file and
//!   rename) and never modified, so an eviction, a `free` or a new object
//!   version between the worker's answer and the client's read leaves the
//!   descriptor on the old, intact file of the version the client asked for.

use std::io::{IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

/// Descriptors one reply carries at most (the kernel's limit is 253).
pub const MAX_FDS: usize = 192;

/// Bytes of one message at most.
pub const MAX_MESSAGE: usize = 4 << 20;

/// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): the same in
/// every container of one node, different on every other node and after
/// every reboot. `None` where the kernel does not expose it.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A client's message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The first message of a connection.
    Hello {
        /// The worker's auth token, when the client has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// What the client can read beyond whole page files:
        /// [`FEATURE_RECORDS`] (packed records at an offset).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// Descriptors of the cached pages of byte ranges of files.
    Read {
        /// The ranges, one per file.
        files: Vec<FileRange>,
    },
    /// A page file the client found corrupt: the worker deletes it, so the
    /// next read fetches the page anew from the UFS.
    Corrupt {
        /// The normalized URL.
        url: String,
        /// The version the page claimed to be of.
        version: String,
        /// The page index.
        index: u64,
    },
}

/// A client feature: it reads packed records (a descriptor of a segment
/// file, an offset and a length in [`FilePages::spans`]); without it a
/// worker passes only whole page files.
pub const FEATURE_RECORDS: &str = "records";

/// One file's range in a [`Request::Read`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRange {
    /// The normalized URL.
    pub url: String,
    /// The version the client pins (its open file's), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// First byte wanted.
    pub start: u64,
    /// End of the bytes wanted (exclusive).
    pub end: u64,
}

/// A worker's message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    /// The answer to [`Request::Hello`] when the client may read.
    Hello {
        /// The worker's id (its ring identity's UUID).
        worker_id: String,
        /// The worker's [`boot_id`].
        boot_id: String,
        /// The worker's page size.
        page_size: u64,
    },
    /// The answer to [`Request::Read`]: one entry per file, in order.
    Read {
        /// Per file.
        files: Vec<FilePages>,
    },
    /// The answer to [`Request::Corrupt`].
    Done,
    /// The client may not read through this socket (then the worker
    /// closes it), or the request was malformed.
    Refused {
        /// Why.
        message: String,
    },
}

/// What the worker has on disk for one [`FileRange`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct FilePages {
    /// `"ok"`: the version, size and the descriptors of `pages` consecutive
    /// pages from `first_page` (the next `pages` descriptors of the reply,
    /// possibly none when the first page is not on disk). Anything else
    /// (`"miss"`: metadata not cached; `"changed"`: the pinned version is
    /// not the current one; `"error"`) means: read this file over HTTP.
    pub status: String,
    /// The normalized URL the pages are named by.
    #[serde(default)]
    pub url: String,
    /// The version the pages belong to.
    #[serde(default)]
    pub version: String,
    /// The file's size.
    #[serde(default)]
    pub size: u64,
    /// The index of the first page passed.
    #[serde(default)]
    pub first_page: u64,
    /// How many consecutive pages' descriptors follow.
    #[serde(default)]
    pub pages: u32,
    /// Per descriptor, (offset, length) of the page's bytes in it: a packed
    /// record in a segment file; (0, 0) for a whole page file. Empty: every
    /// descriptor is a whole page file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<(u64, u64)>,
    /// Why, when the status is not `"ok"`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl FilePages {
    /// An answer that sends the client to HTTP for this file.
    pub fn not_local(status: &str, message: impl Into<String>) -> Self {
        FilePages {
            status: status.to_string(),
            message: message.into(),
            ..Default::default()
        }
    }
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Send `msg` as one frame on `sock` with `fds` attached.
pub fn send<T: Serialize>(
    sock: &UnixStream,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(|e| invalid(e.to_string()))?;
    if body.len() > MAX_MESSAGE {
        return Err(invalid("message too large"));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(invalid("too many descriptors for one message"));
    }
    let mut sent = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(&frame)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    // The descriptors went with the first byte; the rest is plain data.
    while sent < frame.len() {
        let mut none = SendAncillaryBuffer::default();
        sent += rustix::net::sendmsg(
            sock,
            &[IoSlice::new(&frame[sent..])],
            &mut none,
            SendFlags::NOSIGNAL,
        )?;
    }
    Ok(())
}

/// Receive one frame from `sock`: the decoded message and the descriptors
/// that came with it (close-on-exec). `Ok(None)` when the peer closed the
/// connection before a new frame.
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: &UnixStream,
) -> std::io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut first = vec![0u8; 8 * 1024];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut first)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    let n = got.bytes;
    if n == 0 {
        return Ok(None);
    }
    let mut data = first;
    data.truncate(n);
    let mut reader = sock;
    while data.len() < 4 {
        let mut b = [0u8; 4];
        let k = reader.read(&mut b[..4 - data.len()])?;
        if k == 0 {
            return Err(invalid("connection closed inside a frame"));
        }
        data.extend_from_slice(&b[..k]);
    }
    let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if len > MAX_MESSAGE {
        return Err(invalid(format!("frame of {len} bytes is too large")));
    }
    if data.len() > 4 + len {
        return Err(invalid("more bytes than one frame"));
    }
    let have = data.len();
    data.resize(4 + len, 0);
    reader.read_exact(&mut data[have..])?;
    let msg = serde_json::from_slice(&data[4..]).map_err(|e| invalid(e.to_string()))?;
    Ok(Some((msg, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn frames_carry_messages_and_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<std::fs::File> = (0..3)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, format!("file {i}")).unwrap();
                std::fs::File::open(p).unwrap()
            })
            .collect();
        let reply = Reply::Read {
            files: vec![FilePages {
                status: "ok".into(),
                url: "file:///x".into(),
                version: "v".into(),
                size: 10,
                first_page: 0,
                pages: 3,
                spans: vec![(0, 0), (4096, 2096), (0, 0)],
                message: String::new(),
            }],
        };
        let fds: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        send(&a, &reply, &fds).unwrap();
        let (got, fds): (Reply, _) = recv(&b).unwrap().unwrap();
        assert_eq!(got, reply);
        assert_eq!(fds.len(), 3);
        for (i, fd) in fds.into_iter().enumerate() {
            let mut s = String::new();
            std::fs::File::from(fd).read_to_string(&mut s).unwrap();
            assert_eq!(s, format!("file {i}"));
        }
        // A large message without descriptors, then the peer closing.
        let big = Request::Read {
            files: (0..5000)
                .map(|i| FileRange {
                    url: format!("s3://bucket/some/long/path/{i}"),
                    version: None,
                    start: 0,
                    end: 1,
                })
                .collect(),
        };
        let sent = big.clone();
        let sender = std::thread::spawn(move || {
            send(&a, &sent, &[]).unwrap();
            a
        });
        let (got, fds): (Request, _) = recv(&b).unwrap().unwrap();
        assert_eq!(got, big);
        assert!(fds.is_empty());
        drop(sender.join().unwrap());
        assert!(recv::<Request>(&b).unwrap().is_none());
    }
}
