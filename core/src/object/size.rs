//! The memory footprint of a value, estimated by walking it with serde: fixed-width
//! numbers at their in-memory width, strings, sequences and maps with their heap
//! headers. This is what the store's memory cap counts. A compact wire encoding would
//! undercount (postcard writes a small `u64` as one byte); walking is one pass with no
//! allocation.

use serde::ser::{self, Serialize};

/// Bytes a `Vec`, `String` or `Box` header takes.
const HEADER: u64 = 24;

/// The estimated memory footprint of `value` in bytes.
pub(crate) fn footprint<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut counter = Counter(0);
    // Serializing into a counter cannot fail unless a user's impl fails; count what we saw.
    let _ = value.serialize(&mut counter);
    counter.0
}

struct Counter(u64);

#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value's Serialize impl failed")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Never
    }
}

type R = Result<(), Never>;

macro_rules! fixed {
    ($($name:ident: $t:ty => $n:expr),* $(,)?) => {
        $(fn $name(self, _: $t) -> R { self.0 += $n; Ok(()) })*
    };
}

impl ser::Serializer for &mut Counter {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fixed! {
        serialize_bool: bool => 1, serialize_i8: i8 => 1, serialize_u8: u8 => 1,
        serialize_i16: i16 => 2, serialize_u16: u16 => 2, serialize_i32: i32 => 4,
        serialize_u32: u32 => 4, serialize_f32: f32 => 4, serialize_char: char => 4,
        serialize_i64: i64 => 8, serialize_u64: u64 => 8, serialize_f64: f64 => 8,
        serialize_i128: i128 => 16, serialize_u128: u128 => 16,
    }

    fn serialize_str(self, v: &str) -> R {
        self.0 += HEADER + v.len() as u64;
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        self.0 += HEADER + v.len() as u64;
        Ok(())
    }
    fn serialize_none(self) -> R {
        self.0 += 1;
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R {
        self.0 += 1;
        v.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        self.0 += 4;
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> R {
        self.0 += 4;
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Never> {
        self.0 += HEADER;
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        self.0 += 4;
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Never> {
        self.0 += HEADER;
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        self.0 += 4;
        Ok(self)
    }
}

macro_rules! compound {
    ($trait:ident, $method:ident $(, $key:ident)?) => {
        impl ser::$trait for &mut Counter {
            type Ok = ();
            type Error = Never;
            fn $method<T: Serialize + ?Sized>(&mut self, $($key: &'static str,)? v: &T) -> R {
                $(let _ = $key;)?
                v.serialize(&mut **self)
            }
            fn end(self) -> R {
                Ok(())
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);
compound!(SerializeStruct, serialize_field, key);
compound!(SerializeStructVariant, serialize_field, key);

impl ser::SerializeMap for &mut Counter {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> R {
        k.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::footprint;

    #[test]
    fn numbers_count_at_their_width_whatever_their_value() {
        assert_eq!(footprint(&vec![0u64; 1000]), 24 + 8000);
        assert_eq!(footprint(&vec![u64::MAX; 1000]), 24 + 8000);
        assert_eq!(footprint(&(1u8, 2.0f32)), 5);
        assert_eq!(footprint("abc"), 27);
    }
}
