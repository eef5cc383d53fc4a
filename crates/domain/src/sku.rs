//! Stock-keeping units and quantities.

use std::fmt;

use crate::error::FieldError;

/// A SKU: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

impl Sku {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !valid_chars {
            return Err(FieldError::new(
                "",
                "must be 1 to 64 characters of letters, digits, '.', '_' or '-'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn from_trusted(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many units of a SKU one line asks for: 1 to [`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(u32);

impl Quantity {
    /// Larger orders are wholesale and go through another channel; the cap also
    /// keeps `qty × price` far from overflow.
    pub const MAX: u32 = 10_000;

    pub fn parse(raw: i64) -> Result<Self, FieldError> {
        match u32::try_from(raw) {
            Ok(qty) if (1..=Self::MAX).contains(&qty) => Ok(Self(qty)),
            _ => Err(FieldError::new(
                "",
                format!("must be an integer from 1 to {}", Self::MAX),
            )),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_and_quantities_are_bounded() {
        assert!(Sku::parse("WH-1000XM5").is_ok());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("has space").is_err());
        assert!(Sku::parse(&"x".repeat(65)).is_err());
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert!(Quantity::parse(10_001).is_err());
        assert!(Quantity::parse(i64::MAX).is_err());
        assert_eq!(Quantity::parse(7).map(Quantity::get), Ok(7));
    }
}
