//! Shipping addresses.

use crate::error::{FieldError, ValidationErrors};

/// ISO 3166-1 alpha-2 codes, officially assigned.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL \
BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO \
DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM \
HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR \
LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL \
NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ \
SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA \
VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// An ISO 3166-1 alpha-2 country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country([u8; 2]);

impl Country {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let bytes = raw.as_bytes();
        if bytes.len() == 2 && COUNTRIES.split(' ').any(|code| code == raw) {
            Ok(Self([bytes[0], bytes[1]]))
        } else {
            Err(FieldError::new(
                "",
                "must be an ISO 3166-1 alpha-2 country code such as \"US\"",
            ))
        }
    }

    pub fn code(&self) -> &str {
        // Both bytes come from COUNTRIES, which is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

/// The raw fields of an address as a client sends them.
#[derive(Debug, Clone, Default)]
pub struct AddressFields<'a> {
    pub line1: &'a str,
    pub line2: Option<&'a str>,
    pub city: &'a str,
    pub state: Option<&'a str>,
    pub postal_code: &'a str,
    pub country: &'a str,
}

/// A validated shipping address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Address {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub postal_code: String,
    pub country: String,
}

fn text(field: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max || trimmed.chars().any(char::is_control) {
        Err(FieldError::new(
            field,
            format!("must be 1 to {max} printable characters"),
        ))
    } else {
        Ok(trimmed.to_owned())
    }
}

impl Address {
    pub fn parse(fields: AddressFields<'_>) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let line1 = errors.collect("", text("line1", fields.line1, 200));
        let line2 = fields.line2.and_then(|raw| errors.collect("", text("line2", raw, 200)));
        let city = errors.collect("", text("city", fields.city, 100));
        let state = fields.state.and_then(|raw| errors.collect("", text("state", raw, 100)));
        let postal_code = errors.collect("", text("postal_code", fields.postal_code, 20));
        let country = errors.collect("country", Country::parse(fields.country));
        match (line1, city, postal_code, country) {
            (Some(line1), Some(city), Some(postal_code), Some(country)) if errors.is_empty() => Ok(Self {
                line1,
                line2,
                city,
                state,
                postal_code,
                country: country.code().to_owned(),
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_report_every_bad_field() {
        let errors = Address::parse(AddressFields {
            line1: "",
            city: "Portland",
            postal_code: "97201",
            country: "USA",
            ..Default::default()
        })
        .unwrap_err();
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["line1", "country"]);
        let ok = Address::parse(AddressFields {
            line1: "123 Main St",
            city: "Portland",
            state: Some("OR"),
            postal_code: "97201",
            country: "US",
            ..Default::default()
        });
        assert!(ok.is_ok());
    }
}
