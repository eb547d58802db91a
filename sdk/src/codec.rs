//! How records are encoded on each edge.
//!
//! Between guest operators records are postcard; into text sinks they are JSON; from host
//! sources they are whatever the connector produces (UTF-8 lines, JSON lines, datagen's fixed
//! layout). The host never looks inside.

use serde::{de::DeserializeOwned, Serialize};

use crate::connectors::DatagenRecord;
use crate::Error;

/// Records that can travel between operators: serde-serializable, cloneable, owned.
pub trait Data: Serialize + DeserializeOwned + Clone + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + 'static> Data for T {}

pub(crate) type Decode<T> = fn(&[u8]) -> Result<T, Error>;
pub(crate) type Encode<T> = fn(&T, &mut Vec<u8>);

pub(crate) fn decode_postcard<T: Data>(b: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(b).map_err(|e| Error::msg(format!("cannot decode record: {e}")))
}

pub(crate) fn encode_postcard<T: Data>(v: &T, out: &mut Vec<u8>) {
    let buf = std::mem::take(out);
    *out = postcard::to_extend(v, buf).expect("writing to a Vec cannot fail");
}

pub(crate) fn decode_json<T: Data>(b: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(b).map_err(|e| {
        Error::msg(format!(
            "invalid JSON record {:?}: {e}",
            String::from_utf8_lossy(&b[..b.len().min(200)])
        ))
    })
}

pub(crate) fn encode_json<T: Data>(v: &T, out: &mut Vec<u8>) {
    serde_json::to_writer(out, v).expect("serializing a record to JSON failed");
}

pub(crate) fn encode_nothing<T>(_: &T, _: &mut Vec<u8>) {}

pub(crate) fn decode_line(b: &[u8]) -> Result<String, Error> {
    String::from_utf8(b.to_vec()).map_err(|e| Error::msg(format!("line is not UTF-8: {e}")))
}

pub(crate) fn decode_datagen(b: &[u8]) -> Result<DatagenRecord, Error> {
    if b.len() != 32 {
        return Err(Error::msg(format!(
            "datagen record has {} bytes, expected 32",
            b.len()
        )));
    }
    let word = |i: usize| <[u8; 8]>::try_from(&b[i * 8..i * 8 + 8]).expect("8 bytes");
    Ok(DatagenRecord {
        seq: u64::from_le_bytes(word(0)),
        key: u64::from_le_bytes(word(1)),
        value: i64::from_le_bytes(word(2)),
        timestamp: i64::from_le_bytes(word(3)),
    })
}

/// Encoding of records that leave a node, chosen by the node that receives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SinkFormat {
    /// Into another guest operator.
    Postcard,
    /// Into a text sink.
    Json,
    /// Into a sink that ignores record contents.
    Nothing,
}

impl SinkFormat {
    pub(crate) fn encoder<T: Data>(self) -> Encode<T> {
        match self {
            SinkFormat::Postcard => encode_postcard::<T>,
            SinkFormat::Json => encode_json::<T>,
            SinkFormat::Nothing => encode_nothing::<T>,
        }
    }
}
