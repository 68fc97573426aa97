//! Content rules applied to a viewer's text: the word filter and link
//! detection. Both are deliberately simple (whole words, a fixed list of
//! common top-level domains); they stop the casual case, and moderators
//! handle the rest.

use std::collections::HashSet;

/// What the word filter does with a filtered word (`block` or `mask` in
/// configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterMode {
    /// Refuse the message with `filtered`.
    #[default]
    Block,
    /// Replace each filtered word by as many `*` as it has characters.
    Mask,
}

/// A case-insensitive whole-word filter.
#[derive(Debug, Clone, Default)]
pub struct WordFilter {
    words: HashSet<String>,
    mode: FilterMode,
}

impl WordFilter {
    /// A filter of `words`. Entries are matched as whole words (runs of
    /// letters and digits), ignoring case; blank entries are ignored.
    pub fn new<I, S>(words: I, mode: FilterMode) -> WordFilter
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let words = words
            .into_iter()
            .map(|w| w.as_ref().trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
        WordFilter { words, mode }
    }

    /// The mode.
    pub fn mode(&self) -> FilterMode {
        self.mode
    }

    /// `None` when the text must be refused, else the text to post (masked
    /// if need be).
    pub(crate) fn apply(&self, text: &str) -> Option<String> {
        if self.words.is_empty() {
            return Some(text.to_owned());
        }
        let hits = self.hits(text);
        if hits.is_empty() {
            return Some(text.to_owned());
        }
        match self.mode {
            FilterMode::Block => None,
            FilterMode::Mask => {
                let mut out = String::with_capacity(text.len());
                let mut at = 0;
                for (start, end) in hits {
                    out.push_str(&text[at..start]);
                    out.extend(std::iter::repeat_n('*', text[start..end].chars().count()));
                    at = end;
                }
                out.push_str(&text[at..]);
                Some(out)
            }
        }
    }

    /// Byte ranges of the filtered words in `text`, in order.
    fn hits(&self, text: &str) -> Vec<(usize, usize)> {
        let mut hits = Vec::new();
        let mut start = None;
        // A sentinel space ends the last word.
        for (i, c) in text
            .char_indices()
            .chain(std::iter::once((text.len(), ' ')))
        {
            match (c.is_alphanumeric(), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    if self.words.contains(&text[s..i].to_lowercase()) {
                        hits.push((s, i));
                    }
                    start = None;
                }
                _ => {}
            }
        }
        hits
    }
}

/// Top-level domains that make a bare `name.tld` count as a link.
const TLDS: &[&str] = &[
    "com", "net", "org", "io", "gg", "tv", "ly", "me", "co", "xyz", "ru", "de", "uk", "app", "dev",
    "info", "biz", "live", "link", "site", "online", "shop", "top", "cc", "be", "to",
];

/// Whether `text` contains something a browser would follow: a scheme
/// (`https://…`), `www.…`, or a bare `name.tld` with a common TLD.
pub(crate) fn contains_link(text: &str) -> bool {
    text.split_whitespace().any(|token| {
        let token = token.to_ascii_lowercase();
        if token.contains("://") || token.starts_with("www.") {
            return true;
        }
        let token = token.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        let host = token.split(['/', '?', '#', ':']).next().unwrap_or("");
        match host.rsplit_once('.') {
            Some((name, tld)) => {
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                    && TLDS.contains(&tld)
            }
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_masks_whole_words_ignoring_case() {
        let block = WordFilter::new(["darn"], FilterMode::Block);
        assert_eq!(block.apply("oh DARN it"), None);
        assert_eq!(
            block.apply("darnit is fine").as_deref(),
            Some("darnit is fine")
        );
        let mask = WordFilter::new(["darn", "heck"], FilterMode::Mask);
        assert_eq!(mask.apply("Darn, heck!").as_deref(), Some("****, ****!"));
        assert_eq!(mask.apply("héck darn").as_deref(), Some("héck ****"));
    }

    #[test]
    fn finds_links() {
        for text in [
            "see https://x.y",
            "go www.example",
            "visit example.com/page",
            "(lumen.tv)",
        ] {
            assert!(contains_link(text), "{text}");
        }
        for text in ["e.g. this", "3.14", "well...ok", "file.txt"] {
            assert!(!contains_link(text), "{text}");
        }
    }
}
