//! Messy but valid rows: values a person would call valid but written sloppily (padding,
//! odd case), which the worker cleans before validating (docs/validation.md, "Cleaning")
//! and loads normalised. Each kind exercises cleaning rules of one column; the manifest
//! lists every messy line with the value written and the value the worker must store.

use rand::RngCore;
use serde::Serialize;

/// A kind of messy-but-valid row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessyKind {
    /// `session_id` with surrounding spaces or tabs (rule `trim`).
    PaddedSessionId,
    /// `event_type` in another case, sometimes padded: ` VIEW `, `Add_To_Cart` (rules
    /// `ignore_case`, `trim`).
    OddCaseEventType,
    /// `category` in another case, sometimes padded: `  Books `, `TOYS` (rules
    /// `lowercase`, `trim`).
    OddCaseCategory,
    /// `event_id` in upper-case hex (rule `lowercase`).
    UpperCaseEventId,
}

impl MessyKind {
    pub const ALL: [MessyKind; 4] = [
        MessyKind::PaddedSessionId,
        MessyKind::OddCaseEventType,
        MessyKind::OddCaseCategory,
        MessyKind::UpperCaseEventId,
    ];

    /// The name used in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            MessyKind::PaddedSessionId => "padded_session_id",
            MessyKind::OddCaseEventType => "odd_case_event_type",
            MessyKind::OddCaseCategory => "odd_case_category",
            MessyKind::UpperCaseEventId => "upper_case_event_id",
        }
    }

    /// The column the kind makes messy (a `HEADER_FIELDS` name).
    pub fn column(self) -> &'static str {
        match self {
            MessyKind::PaddedSessionId => "session_id",
            MessyKind::OddCaseEventType => "event_type",
            MessyKind::OddCaseCategory => "category",
            MessyKind::UpperCaseEventId => "event_id",
        }
    }

    /// Index of [`MessyKind::column`] in the row.
    pub fn column_index(self) -> usize {
        match self {
            MessyKind::PaddedSessionId => 3,
            MessyKind::OddCaseEventType => 4,
            MessyKind::OddCaseCategory => 6,
            MessyKind::UpperCaseEventId => 0,
        }
    }

    /// Position in [`MessyKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<MessyKind> {
        MessyKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The messy spelling of `clean` (the canonical value), varied by `bits`.
    pub fn mess_up(self, clean: &str, bits: u32) -> String {
        let pads = ["  ", " ", "\t", " \t"];
        let (left, right) = (pads[bits as usize % 4], pads[(bits >> 2) as usize % 4]);
        match self {
            MessyKind::PaddedSessionId => format!("{left}{clean}{right}"),
            MessyKind::OddCaseEventType | MessyKind::OddCaseCategory => {
                let odd = match (bits >> 4) % 3 {
                    0 => clean.to_ascii_uppercase(),
                    1 => title_case(clean),
                    // Alternating case: vIeW, aDd_tO_CaRt.
                    _ => clean
                        .chars()
                        .enumerate()
                        .map(|(i, c)| {
                            if i % 2 == 1 {
                                c.to_ascii_uppercase()
                            } else {
                                c
                            }
                        })
                        .collect(),
                };
                if (bits >> 6) & 1 == 0 {
                    format!("{left}{odd}{right}")
                } else {
                    odd
                }
            }
            MessyKind::UpperCaseEventId => clean.to_ascii_uppercase(),
        }
    }
}

/// `add_to_cart` → `Add_To_Cart`, `home_garden` → `Home_Garden`.
fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        out.push(if start { c.to_ascii_uppercase() } else { c });
        start = !c.is_ascii_alphanumeric();
    }
    out
}

/// The cleaning rules the worker applies to turn `raw` into `cleaned` in `column`, in
/// the order it applies them: `trim`, then `ignore_case` (`event_type`) or `lowercase`.
pub fn rules_for(column: &str, raw: &str, cleaned: &str) -> Vec<&'static str> {
    let trimmed = raw.trim_matches([' ', '\t']);
    let mut rules = Vec::new();
    if trimmed.len() != raw.len() {
        rules.push("trim");
    }
    if trimmed != cleaned {
        rules.push(if column == "event_type" {
            "ignore_case"
        } else {
            "lowercase"
        });
    }
    rules
}

/// One messy line of a file, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessyLine {
    /// 1-based, the header being line 1.
    pub line: u64,
    pub kind: &'static str,
    /// The stored (lower-case, hyphenated) event id of the row.
    pub event_id: String,
    pub column: &'static str,
    /// The value as written in the file.
    pub raw: String,
    /// The value the worker must store.
    pub cleaned: String,
    /// The cleaning rules the worker counts for this row (`sluice_rows_cleaned_total`).
    pub rules: Vec<&'static str>,
}

/// Decides which valid rows are written messy: each with probability `share`, the kind
/// uniformly among the four.
#[derive(Debug, Clone, Copy)]
pub struct MessyDraw {
    threshold: u64,
    always: bool,
    never: bool,
}

impl MessyDraw {
    pub fn new(share: f64) -> MessyDraw {
        let share = if share.is_nan() {
            0.0
        } else {
            share.clamp(0.0, 1.0)
        };
        MessyDraw {
            threshold: (share * 18_446_744_073_709_551_616.0) as u64,
            always: share >= 1.0,
            never: share <= 0.0,
        }
    }

    /// Draws the mess of the next valid row, if any, with the bits that vary its
    /// spelling. Uses no randomness when the share is 0 (so output without messy rows
    /// is what it always was).
    pub fn draw(&self, rng: &mut impl RngCore) -> Option<(MessyKind, u32)> {
        if self.never {
            return None;
        }
        if self.always || rng.next_u64() < self.threshold {
            let bits = rng.next_u32();
            Some((
                MessyKind::ALL[(bits >> 24) as usize % MessyKind::ALL.len()],
                bits,
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn kinds_round_trip() {
        for (i, k) in MessyKind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(MessyKind::parse(k.as_str()), Some(k));
            assert_eq!(
                sluice_core::event::HEADER_FIELDS[k.column_index()],
                k.column()
            );
        }
    }

    #[test]
    fn messy_spellings_clean_back_to_the_canonical_value() {
        for bits in 0..256u32 {
            for (kind, clean) in [
                (MessyKind::PaddedSessionId, "00ab12cd34ef5678"),
                (MessyKind::OddCaseEventType, "add_to_cart"),
                (MessyKind::OddCaseCategory, "home_garden"),
                (
                    MessyKind::UpperCaseEventId,
                    "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
                ),
            ] {
                let raw = kind.mess_up(clean, bits);
                assert_ne!(raw, clean, "{kind:?} {bits}");
                let trimmed = raw.trim_matches([' ', '\t']);
                assert_eq!(trimmed.to_ascii_lowercase(), clean, "{kind:?} {raw:?}");
                assert!(!rules_for(kind.column(), &raw, clean).is_empty());
            }
        }
        assert_eq!(title_case("add_to_cart"), "Add_To_Cart");
        assert_eq!(
            rules_for("event_type", " VIEW ", "view"),
            ["trim", "ignore_case"]
        );
        assert_eq!(rules_for("category", "TOYS", "toys"), ["lowercase"]);
        assert_eq!(rules_for("session_id", "\tab ", "ab"), ["trim"]);
    }

    #[test]
    fn share_is_respected_and_zero_draws_nothing() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let d = MessyDraw::new(0.1);
        let n = 100_000;
        let messy = (0..n).filter(|_| d.draw(&mut rng).is_some()).count();
        assert!((9_000..11_000).contains(&messy), "{messy}");
        let before = rng.clone().next_u64();
        assert!(MessyDraw::new(0.0).draw(&mut rng).is_none());
        assert_eq!(rng.next_u64(), before, "no randomness used at share 0");
    }
}
