//! The character vocabulary of a character-level language model: the sorted distinct
//! characters of the training text, each with its index (the class of the model's output).
//!
//! On disk it is `vocab.json`, `{"chars": ["\n", " ", "!", ...]}`, one string of one character
//! per entry, in index order; PyTorch scripts read it with `json.load`.
//!
//! ```
//! use rnn::charlm::Vocab;
//! let v = Vocab::from_text("hello").unwrap();
//! assert_eq!(v.chars(), ['e', 'h', 'l', 'o']);
//! assert_eq!(v.encode("hole").unwrap(), [1, 3, 2, 0]);
//! assert_eq!(v.decode(&[1, 0, 2, 2, 3]), "hello");
//! assert!(v.encode("help").is_err()); // 'p' is not in the vocabulary
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::write_atomic;

/// How many unknown characters an error lists.
const MAX_SHOWN: usize = 8;

/// A character vocabulary: index `i` is the `i`-th character of [`Vocab::chars`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    chars: Vec<char>,
    index: HashMap<char, usize>,
}

/// The JSON form: `{"chars": ["a", "b"]}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabJson {
    chars: Vec<String>,
}

impl Vocab {
    /// The sorted distinct characters of `text`. Fails on an empty text.
    pub fn from_text(text: &str) -> Result<Vocab> {
        let set: BTreeSet<char> = text.chars().collect();
        Vocab::from_chars(set.into_iter().collect())
    }

    /// A vocabulary with the characters in this order. Fails if it is empty or a character
    /// appears twice.
    pub fn from_chars(chars: Vec<char>) -> Result<Vocab> {
        if chars.is_empty() {
            return Err(Error::Invalid(
                "a vocabulary needs at least one character".into(),
            ));
        }
        let mut index = HashMap::with_capacity(chars.len());
        for (i, &c) in chars.iter().enumerate() {
            if let Some(j) = index.insert(c, i) {
                return Err(Error::Invalid(format!(
                    "the vocabulary has {} twice (entries {j} and {i})",
                    describe(c)
                )));
            }
        }
        Ok(Vocab { chars, index })
    }

    /// Number of characters (the model's `vocab_size`).
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Always false: a vocabulary has at least one character.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters, in index order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The index of `c`, if it is in the vocabulary.
    pub fn index(&self, c: char) -> Option<usize> {
        self.index.get(&c).copied()
    }

    /// The indices of the characters of `text`. Characters outside the vocabulary are an
    /// [`Error::Invalid`] that lists them (the first few, with their code points) and counts
    /// their occurrences.
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(text.len());
        let mut unknown: Vec<char> = Vec::new();
        let mut count = 0usize;
        for c in text.chars() {
            match self.index.get(&c) {
                Some(&i) => out.push(i),
                None => {
                    count += 1;
                    if !unknown.contains(&c) {
                        unknown.push(c);
                    }
                }
            }
        }
        if unknown.is_empty() {
            return Ok(out);
        }
        let mut shown: Vec<String> = unknown
            .iter()
            .take(MAX_SHOWN)
            .map(|&c| describe(c))
            .collect();
        if unknown.len() > MAX_SHOWN {
            shown.push(format!("and {} more", unknown.len() - MAX_SHOWN));
        }
        Err(Error::Invalid(format!(
            "{count} character(s) are not in the model's vocabulary of {}: {}",
            self.len(),
            shown.join(", ")
        )))
    }

    /// The text of `indices`; an index out of range becomes U+FFFD.
    pub fn decode(&self, indices: &[usize]) -> String {
        indices
            .iter()
            .map(|&i| self.chars.get(i).copied().unwrap_or('\u{FFFD}'))
            .collect()
    }

    /// The JSON text: `{"chars": [...]}`.
    pub fn to_json(&self) -> String {
        let json = VocabJson {
            chars: self.chars.iter().map(|c| c.to_string()).collect(),
        };
        serde_json::to_string(&json).expect("strings serialize")
    }

    /// Parses [`Vocab::to_json`]'s text; `origin` names it in errors.
    pub fn from_json(json: &str, origin: impl AsRef<Path>) -> Result<Vocab> {
        let origin = origin.as_ref();
        let parsed: VocabJson = serde_json::from_str(json).map_err(|e| {
            Error::format(
                origin,
                format!("not a vocabulary file ({{\"chars\": [\"a\", \"b\", ...]}}): {e}"),
            )
        })?;
        let mut chars = Vec::with_capacity(parsed.chars.len());
        for (i, s) in parsed.chars.iter().enumerate() {
            let mut it = s.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => chars.push(c),
                _ => {
                    return Err(Error::format(
                        origin,
                        format!("entry {i} is {s:?}: each entry must be exactly one character"),
                    ))
                }
            }
        }
        Vocab::from_chars(chars).map_err(|e| Error::format(origin, e.to_string()))
    }

    /// Reads a `vocab.json` file.
    pub fn read(path: impl AsRef<Path>) -> Result<Vocab> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::format(path, "not a vocabulary file: not UTF-8 text"))?;
        Vocab::from_json(&text, path)
    }

    /// Writes `vocab.json` atomically (see [`write_atomic`]).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path, self.to_json().as_bytes())
    }
}

/// `'a' (U+0061)`, with control characters escaped: `'\n' (U+000A)`.
pub(crate) fn describe(c: char) -> String {
    format!("{:?} (U+{:04X})", c, c as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_errors() {
        let v = Vocab::from_text("ab\n\"é\\").unwrap();
        assert_eq!(v.len(), 6);
        let back = Vocab::from_json(&v.to_json(), "<memory>").unwrap();
        assert_eq!(back, v);
        let err = Vocab::from_json(r#"{"chars": ["a", "bc"]}"#, "v.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("v.json") && err.contains("entry 1"), "{err}");
        let err = Vocab::from_json(r#"{"chars": ["a", "a"]}"#, "v.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
        assert!(Vocab::from_json(r#"{"chars": []}"#, "v.json").is_err());
        assert!(Vocab::from_json("[1, 2", "v.json").is_err());
    }

    #[test]
    fn unknown_characters_are_listed() {
        let v = Vocab::from_text("abc").unwrap();
        let err = v.encode("abzzy").unwrap_err().to_string();
        assert!(
            err.contains("3 character(s)") && err.contains("'z' (U+007A)") && err.contains("'y'"),
            "{err}"
        );
    }
}
