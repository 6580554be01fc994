//! The page file format, as the store uses it: the encoding and the checks
//! live in [`alluxiofs_core::page_file`], shared with the same-node client
//! that reads page files through passed descriptors, so both check a page
//! exactly alike. This module adapts them to [`PageKey`].

use super::PageKey;
use bytes::Bytes;

pub(super) use alluxiofs_core::page_file::{decode_header, header_len, text_lens, FIXED_HEADER};

/// The header of `data` as the page `key` of a store of `page_size`.
pub(super) fn encode_header(page_size: u64, key: &PageKey, data: &[u8]) -> Vec<u8> {
    alluxiofs_core::page_file::encode_header(page_size, key.url(), key.version(), key.index(), data)
}

/// The data of the page file `raw`, if it is the page `key` of a store of
/// `page_size` and its checksum holds; else why not.
pub(super) fn verify(
    page_size: u64,
    key: &PageKey,
    raw: Vec<u8>,
) -> std::result::Result<Bytes, String> {
    alluxiofs_core::page_file::verify(page_size, key.url(), key.version(), key.index(), raw)
}
