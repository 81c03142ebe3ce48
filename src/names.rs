//! Usernames: which names are allowed, the form everyone sees (NFC), and the
//! key names are compared by, so that nobody logs in under a name that looks
//! like one already online (case, invisible characters, look-alike letters).

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeEmoji, UnicodeGeneralCategory};

use crate::protocol::{ErrorCode, Rejection};

/// Longest allowed username, in characters (Unicode scalar values, in NFC).
pub const MAX_CHARS: usize = 32;

/// Longest request for a username that `check` looks at, in bytes: a name
/// of `MAX_CHARS` characters in NFC may be sent in another canonically
/// equivalent form, each character as its full canonical decomposition (at
/// most 4 code points, e.g. U+1F82), each code point at most 4 bytes in
/// UTF-8. Anything longer cannot be a name and is refused unread, before
/// any work that grows with it.
pub const MAX_BYTES: usize = MAX_CHARS * 4 * 4;

/// Whether `name` is too long to be a name whatever it holds (`MAX_BYTES`).
pub(crate) fn too_long(name: &str) -> bool {
    name.len() > MAX_BYTES
}

#[cfg(test)]
thread_local! {
    /// How many names `check` has normalized on this thread (the tests'
    /// proof that a long input is refused before any work).
    static NORMALIZED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many names `check` has normalized on this thread.
#[cfg(test)]
pub(crate) fn normalized() -> usize {
    NORMALIZED.with(|n| n.get())
}

/// Symbols that draw nothing, yet are neither whitespace nor default
/// ignorable, so no Unicode property finds them.
const BLANK_SYMBOLS: [char; 2] = [
    '\u{2800}',  // BRAILLE PATTERN BLANK
    '\u{1D159}', // MUSICAL SYMBOL NULL NOTEHEAD
];

/// A username that passed `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    /// The name in NFC: what everyone sees.
    pub display: String,
    /// What names are compared by: two names with the same key cannot be
    /// online at once. Case-folded UTS #39 confusable skeleton, runs of
    /// spaces made one; not for display.
    pub key: String,
}

/// Checks a requested username and returns its display form and key, or why
/// it is refused (always `InvalidName`; whether the key is free is the
/// room's business).
///
/// Refused: empty; over `MAX_BYTES` bytes as sent (checked first, so that
/// nothing grows with a long input); over `MAX_CHARS` characters after NFC; control
/// characters; line and paragraph separators; format characters (Cf: bidi
/// controls, zero-width characters, BOM, soft hyphen…) and other default
/// ignorable code points, except a variation selector after an emoji or a
/// zero-width joiner between emoji (as in 🏳️‍🌈); blank symbols (U+2800);
/// private-use and unassigned code points; leading or trailing whitespace;
/// nothing but whitespace and combining marks.
pub(crate) fn check(name: &str) -> Result<Name, Rejection> {
    let refuse = |reason: String| Err(Rejection::new(ErrorCode::InvalidName, reason));
    if name.is_empty() {
        return refuse("a username must not be empty".into());
    }
    if too_long(name) {
        return refuse(format!(
            "a username must be at most {MAX_CHARS} characters (this one has {} bytes)",
            name.len()
        ));
    }
    #[cfg(test)]
    NORMALIZED.with(|n| n.set(n.get() + 1));
    let display: String = name.nfc().collect();
    let chars: Vec<char> = display.chars().collect();
    if chars.len() > MAX_CHARS {
        return refuse(format!(
            "a username must be at most {MAX_CHARS} characters (this one has {})",
            chars.len()
        ));
    }
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1).copied();
        if let Some(what) = forbidden(c, prev, next) {
            return refuse(format!("a username must not contain {what} (U+{:04X})", c as u32));
        }
    }
    if display.trim() != display {
        return refuse("a username must not start or end with a space".into());
    }
    if !chars.iter().any(|&c| is_visible(c)) {
        return refuse(
            "a username must contain a letter, digit, punctuation mark or symbol".into(),
        );
    }
    // A name that reads as an address or a network could not be told from
    // one by `ragnarok ctl ban` and moderators (found by a review).
    if display.parse::<crate::addresses::Cidr>().is_ok() {
        return refuse(format!(
            "a username must not be an address or a network ({display:?} reads as one)"
        ));
    }
    let key = key(&display);
    Ok(Name { display, key })
}

/// What kind of forbidden character `c` is, if it is one. `prev` and `next`
/// are its neighbours, for the emoji sequences that need a joiner or a
/// variation selector.
fn forbidden(c: char, prev: Option<char>, next: Option<char>) -> Option<&'static str> {
    use GeneralCategory as G;
    Some(match c.general_category() {
        G::Control => "control characters",
        G::LineSeparator | G::ParagraphSeparator => "line or paragraph separators",
        G::PrivateUse => "private-use characters",
        G::Unassigned => "unassigned code points",
        G::Format if !in_emoji_sequence(c, prev, next) => "invisible or formatting characters",
        _ if BLANK_SYMBOLS.contains(&c) => "invisible or formatting characters",
        _ if is_default_ignorable(c) && !in_emoji_sequence(c, prev, next) => {
            "invisible or formatting characters"
        }
        _ => return None,
    })
}

/// A variation selector (U+FE0E, U+FE0F) right after an emoji, or a
/// zero-width joiner between two emoji: these only change how the emoji is
/// drawn, and phones insert them. (They are dropped from the key, so they
/// cannot tell two names apart.)
fn in_emoji_sequence(c: char, prev: Option<char>, next: Option<char>) -> bool {
    let emoji = |c: Option<char>| c.is_some_and(|c| c.is_emoji_char());
    match c {
        '\u{FE0E}' | '\u{FE0F}' => emoji(prev),
        '\u{200D}' => (emoji(prev) || prev == Some('\u{FE0F}')) && emoji(next),
        _ => false,
    }
}

/// Default_Ignorable_Code_Point. UTS #39's skeleton drops exactly these
/// code points (unicode-security keeps its table private), so a lone one
/// has an empty skeleton.
fn is_default_ignorable(c: char) -> bool {
    unicode_security::skeleton(c.encode_utf8(&mut [0; 4])).next().is_none()
}

/// Letters, digits, punctuation and symbols draw something. Whitespace and
/// combining marks do not on their own, nor do the emoji joiners and
/// selectors that `forbidden` lets through (everything else it refuses).
fn is_visible(c: char) -> bool {
    use GeneralCategory as G;
    let mark =
        matches!(c.general_category(), G::NonspacingMark | G::SpacingMark | G::EnclosingMark);
    !c.is_whitespace() && !mark && !is_default_ignorable(c)
}

/// The comparison key of an NFC name: case-folded, then the UTS #39
/// skeleton (look-alikes such as Cyrillic "а" become Latin "a", default
/// ignorables vanish), case-folded again (skeletons keep some capitals, such
/// as "O" for a zero), decomposed, each run of whitespace made one space.
///
/// Folding comes first because case must never matter, and a key cannot
/// have both: the skeleton of capital "I" is "l", so skeleton-first would
/// keep "ALICE" apart from "alice". The price is that "PauI" (capital i)
/// and "Paul" get different keys.
fn key(display: &str) -> String {
    let folded: String = display.chars().default_case_fold().collect();
    let mut key = String::with_capacity(folded.len());
    for c in unicode_security::skeleton(&folded).default_case_fold().nfd() {
        if c.is_whitespace() {
            if !key.ends_with(' ') {
                key.push(' ');
            }
        } else {
            key.push(c);
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(name: &str) -> String {
        match check(name) {
            Ok(ok) => panic!("{name:?} was accepted as {ok:?}"),
            Err(why) => {
                assert_eq!(why.code, ErrorCode::InvalidName, "{name:?}");
                why.text
            }
        }
    }

    fn key_of(name: &str) -> String {
        check(name).unwrap_or_else(|e| panic!("{name:?}: {}", e.text)).key
    }

    #[test]
    fn accepts_ordinary_names_as_they_are() {
        for name in [
            "alice",
            "John Smith",
            "\u{C5}sa",
            "Jos\u{E9}",
            "日本語",
            &"\u{E9}".repeat(32),
            "🦀",
            "Bob 🦀",
            "Ivan Иван",
            "שלום",
            "O'Brien-Smith",
            "x",
            "❤\u{FE0F}",           // red heart, emoji presentation
            "🏳\u{FE0F}\u{200D}🌈", // rainbow flag
            "👩\u{200D}💻 dev",    // woman technologist
            "1\u{FE0F}\u{20E3}",   // keycap 1
            "\u{1F44D}\u{1F3FD}",  // thumbs up, skin tone
        ] {
            let got = check(name).unwrap_or_else(|e| panic!("{name:?}: {}", e.text));
            assert_eq!(got.display, name, "already NFC, kept as given");
        }
    }

    #[test]
    fn the_display_form_is_nfc() {
        assert_eq!(check("A\u{30A}sa").unwrap().display, "\u{C5}sa");
        assert_eq!(check("Jose\u{301}").unwrap().display, "Jos\u{E9}");
        // 32 characters in NFC, 64 as sent.
        assert_eq!(check(&"e\u{301}".repeat(32)).unwrap().display, "\u{E9}".repeat(32));
    }

    #[test]
    fn refuses_invisible_and_formatting_characters_naming_them() {
        for (name, point) in [
            ("\u{202E}ecila", "U+202E"),         // right-to-left override
            ("al\u{200D}ice", "U+200D"),         // zero-width joiner
            ("alice\u{200B}", "U+200B"),         // zero-width space
            ("\u{FEFF}alice", "U+FEFF"),         // byte order mark
            ("al\u{AD}ice", "U+00AD"),           // soft hyphen
            ("al\u{200C}ice", "U+200C"),         // zero-width non-joiner
            ("\u{200E}alice", "U+200E"),         // left-to-right mark
            ("\u{2066}alice\u{2069}", "U+2066"), // bidi isolate
            ("alice\u{2060}", "U+2060"),         // word joiner
            ("a\u{34F}lice", "U+034F"),          // combining grapheme joiner (Mn)
            ("alice\u{FE0F}", "U+FE0F"),         // variation selector, no emoji before
            ("alice\u{E0061}", "U+E0061"),       // tag letter
            ("\u{3164}", "U+3164"),              // Hangul filler
            ("\u{115F}", "U+115F"),              // Hangul choseong filler
            ("\u{1160}", "U+1160"),              // Hangul jungseong filler
            ("\u{FFA0}", "U+FFA0"),              // halfwidth Hangul filler
            ("\u{2800}", "U+2800"),              // braille blank
            ("alice\u{2800}", "U+2800"),
            ("al\u{3164}ice", "U+3164"),
            ("🦀\u{200D}x", "U+200D"), // a joiner not between emoji
        ] {
            let why = refused(name);
            assert_eq!(
                why,
                format!("a username must not contain invisible or formatting characters ({point})"),
                "{name:?}"
            );
        }
    }

    #[test]
    fn refuses_controls_separators_and_odd_code_points() {
        let cases = [
            ("ali\u{2028}ce", "line or paragraph separators (U+2028)"),
            ("ali\u{2029}ce", "line or paragraph separators (U+2029)"),
            ("bell\u{7}", "control characters (U+0007)"),
            ("tab\there", "control characters (U+0009)"),
            ("two\nlines", "control characters (U+000A)"),
            ("nel\u{85}", "control characters (U+0085)"),
            ("pua\u{E000}", "private-use characters (U+E000)"),
            ("new\u{378}", "unassigned code points (U+0378)"),
            ("non\u{FFFF}", "unassigned code points (U+FFFF)"),
        ];
        for (name, what) in cases {
            assert_eq!(refused(name), format!("a username must not contain {what}"), "{name:?}");
        }
    }

    #[test]
    fn refuses_names_that_read_as_addresses() {
        for name in ["6.6.6.6", "0.0.0.0/0", "::1", "2001:db8::/32", "::ffff:1.2.3.4"] {
            assert!(check(name).unwrap_err().text.contains("must not be an address"), "{name}");
        }
        for name in ["1.2.3", "v6.6.6.6", "10.0.0.1 x", "a::b::c"] {
            assert!(check(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_empty_long_padded_and_blank_names() {
        assert_eq!(refused(""), "a username must not be empty");
        assert_eq!(
            refused(&"x".repeat(33)),
            "a username must be at most 32 characters (this one has 33)"
        );
        for padded in [" bob", "bob ", "\u{A0}bob", "bob\u{3000}", " "] {
            assert_eq!(
                refused(padded),
                "a username must not start or end with a space",
                "{padded:?}"
            );
        }
        for blank in ["\u{301}", "\u{20DD}\u{20DD}"] {
            assert_eq!(
                refused(blank),
                "a username must contain a letter, digit, punctuation mark or symbol",
                "{blank:?}"
            );
        }
    }

    #[test]
    fn a_long_name_is_refused_before_any_work() {
        let before = normalized();
        let why = refused(&"x".repeat(60_000));
        assert!(why.starts_with("a username must be at most 32 characters"), "{why}");
        assert_eq!(normalized(), before, "refused by its length in bytes, not normalized");
        // The longest name that can be 32 characters in NFC is still checked.
        assert!(!too_long(&"\u{1F82}".repeat(32).nfd().collect::<String>()));
        assert!(too_long(&"x".repeat(MAX_BYTES + 1)));
    }

    #[test]
    fn the_byte_bound_accepts_every_name_of_32_characters() {
        // One character in NFC comes from at most its full canonical
        // decomposition's code points, each at most 4 bytes in UTF-8.
        let longest = (0..=0x10FFFF)
            .filter_map(char::from_u32)
            .map(|c| c.to_string().nfd().count())
            .max()
            .unwrap();
        assert!(longest * 4 * MAX_CHARS <= MAX_BYTES, "{longest}");
        // The worst case, as sent: 32 characters of 4 code points each.
        let worst = "\u{1F82}".repeat(MAX_CHARS).nfd().collect::<String>();
        assert_eq!(worst.chars().count(), 4 * MAX_CHARS);
        assert_eq!(check(&worst).unwrap().display, "\u{1F82}".repeat(MAX_CHARS));
    }

    #[test]
    fn look_alikes_share_a_key() {
        let alice = key_of("alice");
        for same in ["Alice", "ALICE", "\u{430}lice", "\u{410}LICE", "a\u{13DE}ice"] {
            assert_eq!(key_of(same), alice, "{same:?}");
        }
        assert_eq!(key_of("\u{C5}sa"), key_of("A\u{30A}sa"), "NFC and NFD");
        assert_eq!(key_of("\u{C5}sa"), key_of("\u{E5}SA"));
        assert_eq!(key_of("bob"), key_of("b0b"));
        assert_eq!(key_of("Pau1"), key_of("Paul"), "digit one looks like small l");
        assert_eq!(key_of("Stra\u{DF}e"), key_of("STRASSE"), "full case folding");
        assert_eq!(key_of("John Smith"), key_of("John  Smith"));
        assert_eq!(key_of("❤\u{FE0F}"), key_of("❤"), "presentation selectors do not count");
    }

    #[test]
    fn different_names_have_different_keys() {
        let names =
            ["alice", "alicia", "bob", "Bobby", "Åsa", "Asa", "José", "Jose", "日本語", "🦀"];
        let keys: std::collections::HashSet<String> = names.iter().map(|n| key_of(n)).collect();
        assert_eq!(keys.len(), names.len(), "{keys:?}");
    }

    #[test]
    fn default_ignorables_are_the_published_ones() {
        // DerivedCoreProperties.txt, Default_Ignorable_Code_Point (Unicode 16).
        let published = [
            (0xAD, 0xAD),
            (0x34F, 0x34F),
            (0x61C, 0x61C),
            (0x115F, 0x1160),
            (0x17B4, 0x17B5),
            (0x180B, 0x180F),
            (0x200B, 0x200F),
            (0x202A, 0x202E),
            (0x2060, 0x206F),
            (0x3164, 0x3164),
            (0xFE00, 0xFE0F),
            (0xFEFF, 0xFEFF),
            (0xFFA0, 0xFFA0),
            (0xFFF0, 0xFFF8),
            (0x1BCA0, 0x1BCA3),
            (0x1D173, 0x1D17A),
            (0xE0000, 0xE0FFF),
        ];
        for (lo, hi) in published {
            for c in (lo..=hi).filter_map(char::from_u32) {
                assert!(is_default_ignorable(c), "U+{:04X}", c as u32);
            }
        }
        for c in ['a', ' ', '\u{301}', '\u{2800}', '\u{A0}', '日', '🦀', '\u{E000}', '\u{378}'] {
            assert!(!is_default_ignorable(c), "U+{:04X}", c as u32);
        }
    }
}
