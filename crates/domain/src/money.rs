//! Money: integer minor units plus an ISO 4217 currency. Never floats.

use std::fmt;

use crate::error::FieldError;

/// Active ISO 4217 codes with their minor-unit exponent. Kept in the binary
/// because the list changes a few times a decade and a checkout must not
/// depend on a lookup service to validate a price.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// An ISO 4217 currency code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(&'static str);

impl Currency {
    pub const USD: Currency = Currency("USD");

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == raw)
            .map(|(code, _)| Currency(code))
            .ok_or_else(|| FieldError::new("", "must be an upper-case ISO 4217 currency code such as \"USD\""))
    }

    pub fn code(self) -> &'static str {
        self.0
    }

    /// Digits after the decimal point: 2 for USD, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u8 {
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == self.0)
            .map_or(2, |(_, exponent)| *exponent)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The largest amount Holdfast accepts for one price or total, in minor units:
/// 10^13 (a hundred billion dollars) keeps every sum far from `i64::MAX`.
pub const MAX_AMOUNT: i64 = 10_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("cannot combine {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("amount exceeds the maximum of {MAX_AMOUNT} minor units")]
    Overflow,
}

/// An amount in minor units (cents) of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: i64,
    currency: Currency,
}

impl Money {
    /// A price or total: zero or more, at most [`MAX_AMOUNT`].
    pub fn new(amount: i64, currency: Currency) -> Result<Self, FieldError> {
        if !(0..=MAX_AMOUNT).contains(&amount) {
            return Err(FieldError::new(
                "amount",
                format!("must be an integer number of minor units between 0 and {MAX_AMOUNT}"),
            ));
        }
        Ok(Self { amount, currency })
    }

    pub fn zero(currency: Currency) -> Self {
        Self { amount: 0, currency }
    }

    pub fn amount(self) -> i64 {
        self.amount
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        self.amount
            .checked_add(other.amount)
            .filter(|sum| *sum <= MAX_AMOUNT)
            .map(|amount| Money {
                amount,
                currency: self.currency,
            })
            .ok_or(MoneyError::Overflow)
    }

    pub fn checked_mul(self, factor: u32) -> Result<Money, MoneyError> {
        self.amount
            .checked_mul(i64::from(factor))
            .filter(|product| *product <= MAX_AMOUNT)
            .map(|amount| Money {
                amount,
                currency: self.currency,
            })
            .ok_or(MoneyError::Overflow)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = u32::from(self.currency.exponent());
        if exponent == 0 {
            return write!(f, "{} {}", self.amount, self.currency);
        }
        let scale = 10_i64.pow(exponent);
        write!(
            f,
            "{}.{:0width$} {}",
            self.amount / scale,
            self.amount % scale,
            self.currency,
            width = exponent as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn currency_codes_are_validated() {
        assert_eq!(Currency::parse("USD"), Ok(Currency::USD));
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("XYZ").is_err());
        assert!(Currency::parse("").is_err());
        assert_eq!(Currency::parse("JPY").map(Currency::exponent), Ok(0));
    }

    #[test]
    fn money_refuses_mixed_currencies_and_overflow() {
        let usd = Money::new(1_000, Currency::USD).unwrap();
        let eur = Money::new(1_000, Currency::parse("EUR").unwrap()).unwrap();
        assert!(matches!(usd.checked_add(eur), Err(MoneyError::CurrencyMismatch(..))));
        let big = Money::new(MAX_AMOUNT, Currency::USD).unwrap();
        assert_eq!(big.checked_add(usd), Err(MoneyError::Overflow));
        assert_eq!(big.checked_mul(2), Err(MoneyError::Overflow));
        assert!(Money::new(-1, Currency::USD).is_err());
        assert_eq!(usd.to_string(), "10.00 USD");
    }

    proptest! {
        #[test]
        fn sums_never_exceed_the_maximum(a in 0..=MAX_AMOUNT, b in 0..=MAX_AMOUNT, n in 0u32..100_000) {
            let a = Money::new(a, Currency::USD).unwrap();
            let b = Money::new(b, Currency::USD).unwrap();
            if let Ok(sum) = a.checked_add(b) { prop_assert!(sum.amount() <= MAX_AMOUNT); }
            if let Ok(product) = a.checked_mul(n) { prop_assert!(product.amount() <= MAX_AMOUNT); }
        }
    }
}
