//! A block: one Arrow record batch, the unit that flows between operators.
//!
//! In one process a block is shared behind the object store's `Arc`, so every reader
//! sees the same Arrow buffers. Between processes it travels as Arrow IPC stream bytes,
//! and is read back into Arrow buffers that point into the received bytes.

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use std::io::Write;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One record batch of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Block(pub RecordBatch);

impl Block {
    /// The batch.
    pub fn batch(&self) -> &RecordBatch {
        &self.0
    }

    /// Its rows.
    pub fn num_rows(&self) -> usize {
        self.0.num_rows()
    }

    /// Its schema.
    pub fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    /// The bytes of the Arrow buffers it holds (what a memory budget counts).
    pub fn bytes(&self) -> usize {
        self.0.get_array_memory_size()
    }
}

/// Counts the writes of an IPC stream, writing nothing.
struct CountWrites(usize);

impl Write for CountWrites {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += 1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Hands every write of an IPC stream to a serializer as one element of a sequence.
struct SeqWrites<'a, S: SerializeSeq> {
    seq: &'a mut S,
    err: Option<S::Error>,
}

impl<S: SerializeSeq> Write for SeqWrites<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.seq.serialize_element(serde_bytes::Bytes::new(buf)) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                self.err = Some(e);
                Err(std::io::Error::other("the serializer failed"))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_ipc(w: impl Write, batch: &RecordBatch) -> Result<(), arrow::error::ArrowError> {
    let mut w = StreamWriter::try_new(w, &batch.schema())?;
    w.write(batch)?;
    w.finish()
}

/// A block is serialized as the pieces its Arrow IPC stream is written in, each handed
/// to the serializer as it is written: encoding copies the buffers once, into the
/// serializer's output, and measuring a block's size (the object store serializes into
/// a counter) copies nothing.
impl Serialize for Block {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut count = CountWrites(0);
        write_ipc(&mut count, &self.0).map_err(serde::ser::Error::custom)?;
        let mut seq = s.serialize_seq(Some(count.0))?;
        let mut w = SeqWrites {
            seq: &mut seq,
            err: None,
        };
        if let Err(e) = write_ipc(&mut w, &self.0) {
            return Err(w.err.take().unwrap_or_else(|| serde::ser::Error::custom(e)));
        }
        seq.end()
    }
}

/// Appends one piece of a serialized block to the bytes gathered so far.
struct Append<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Append<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for Append<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a piece of an Arrow IPC stream")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<(), E> {
        self.0.extend_from_slice(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while let Some(b) = seq.next_element::<u8>()? {
            self.0.push(b);
        }
        Ok(())
    }
}

struct Pieces;

impl<'de> Visitor<'de> for Pieces {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the pieces of an Arrow IPC stream")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::new();
        while seq.next_element_seed(Append(&mut bytes))?.is_some() {}
        Ok(bytes)
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes = d.deserialize_seq(Pieces)?;
        // The decoded arrays point into this one buffer: no copy of the data.
        let mut buf = Buffer::from_vec(bytes);
        let mut decoder = StreamDecoder::new();
        let mut batch = None;
        while !buf.is_empty() {
            if let Some(b) = decoder.decode(&mut buf).map_err(serde::de::Error::custom)? {
                batch.get_or_insert(b);
            }
        }
        decoder.finish().map_err(serde::de::Error::custom)?;
        batch
            .map(Block)
            .ok_or_else(|| serde::de::Error::custom("an Arrow IPC stream without a batch"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_block_survives_the_wire_whole() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..1000)),
                Arc::new(
                    (0..1000)
                        .map(|i| (i % 3 != 0).then_some(i as f64 / 7.0))
                        .collect::<Float64Array>(),
                ),
                Arc::new(
                    (0..1000)
                        .map(|i| (i % 5 != 0).then(|| format!("row {i}")))
                        .collect::<StringArray>(),
                ),
            ],
        )
        .unwrap();
        let block = Block(batch);
        let bytes = prism::object::encode(&block).unwrap();
        assert!(
            bytes.len() as f64 > block.bytes() as f64 * 0.5,
            "the buffers travel"
        );
        let back: Block = prism::object::decode(&bytes).unwrap();
        assert_eq!(back, block);
        // A cut stream is an error, not a panic.
        assert!(prism::object::decode::<Block>(&bytes[..bytes.len() / 2]).is_err());
    }
}
