//! Hand-written lexer shared by both grammars.
//!
//! The lexer never fails: a character it cannot use or a broken string becomes a [`LexProblem`] and lexing goes on,
//! so that the parser can still report every syntax error of the file in one pass. Locations are byte offsets.

use std::fmt;

/// Which file is being lexed. The global file keeps Inspeqtor's very permissive `value` atom (`<`, `>`, `:`, `(`
/// are ordinary characters there), while check files need comparison operators and `family(name)` metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Global,
    Checks,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Tok<'input> {
    // Keywords of check files.
    Check,
    With,
    If,
    Then,
    For,
    Within,
    Expose,
    Happens,
    Every,
    Jobs,
    // Keywords of the global file.
    Set,
    Send,
    Alerts,
    To,
    Via,
    // Punctuation and operators.
    Comma,
    LParen,
    RParen,
    Gt,
    Lt,
    Ge,
    Le,
    EqEq,
    Ne,
    /// A bare word: names, metrics (`memory:rss`), amounts (`1.5g`, `10k/sec`), paths.
    Word(&'input str),
    /// A word made only of ASCII digits (check files only), so `every 2 hours` is LR(1).
    Int(&'input str),
    /// A double-quoted string, escapes already resolved.
    Str(String),
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keyword = match self {
            Tok::Check => "check",
            Tok::With => "with",
            Tok::If => "if",
            Tok::Then => "then",
            Tok::For => "for",
            Tok::Within => "within",
            Tok::Expose => "expose",
            Tok::Happens => "happens",
            Tok::Every => "every",
            Tok::Jobs => "jobs",
            Tok::Set => "set",
            Tok::Send => "send",
            Tok::Alerts => "alerts",
            Tok::To => "to",
            Tok::Via => "via",
            Tok::Comma => ",",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Gt => ">",
            Tok::Lt => "<",
            Tok::Ge => ">=",
            Tok::Le => "<=",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::Word(w) | Tok::Int(w) => return write!(f, "`{}`", Shorten(w)),
            Tok::Str(s) => return write!(f, "string \"{}\"", Shorten(s)),
        };
        write!(f, "`{keyword}`")
    }
}

/// Keeps one-line messages one line and short, whatever the input holds.
struct Shorten<'a>(&'a str);

impl fmt::Display for Shorten<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == 40 {
                return f.write_str("…");
            }
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// A lexing problem: reported as a diagnostic, never fatal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexProblem {
    pub start: usize,
    pub end: usize,
    pub message: String,
}

pub type Spanned<'input> = (usize, Tok<'input>, usize);

pub struct Lexer<'input> {
    text: &'input str,
    pos: usize,
    mode: Mode,
    pub problems: Vec<LexProblem>,
}

impl<'input> Lexer<'input> {
    #[must_use]
    pub fn new(text: &'input str, mode: Mode) -> Self {
        // A UTF-8 byte order mark is invisible in editors; accepting it avoids a baffling error on line 1.
        let pos = if text.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
        Lexer { text, pos, mode, problems: Vec::new() }
    }

    /// Lexes the whole input, returning the tokens and the problems met on the way.
    #[must_use]
    pub fn tokenize(text: &'input str, mode: Mode) -> (Vec<Spanned<'input>>, Vec<LexProblem>) {
        let mut lexer = Lexer::new(text, mode);
        let mut tokens = Vec::new();
        while let Some(token) = lexer.next_token() {
            tokens.push(token);
        }
        (tokens, lexer.problems)
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut chars = self.text[self.pos..].chars();
        chars.next();
        chars.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn problem(&mut self, start: usize, end: usize, message: impl Into<String>) {
        self.problems.push(LexProblem { start, end, message: message.into() });
    }

    fn ends_word(&self, c: char) -> bool {
        if c.is_whitespace() || c.is_control() || matches!(c, '#' | '"' | ',') {
            return true;
        }
        match self.mode {
            Mode::Global => false,
            Mode::Checks => matches!(c, '(' | ')' | '<' | '>') || (matches!(c, '=' | '!') && self.peek2() == Some('=')),
        }
    }

    pub fn next_token(&mut self) -> Option<Spanned<'input>> {
        loop {
            let start = self.pos;
            let c = self.peek()?;
            if c.is_whitespace() {
                self.bump();
                continue;
            }
            if c == '#' {
                while let Some(c) = self.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.bump();
                }
                continue;
            }
            if c.is_control() {
                self.bump();
                self.problem(
                    start,
                    self.pos,
                    format!("unexpected control character {}, expected text", c.escape_default()),
                );
                continue;
            }
            if c == '"' {
                return Some(self.string());
            }
            if c == ',' {
                self.bump();
                return Some((start, Tok::Comma, self.pos));
            }
            if self.mode == Mode::Checks {
                let two = |lexer: &mut Self, tok: Tok<'input>| {
                    lexer.bump();
                    lexer.bump();
                    Some((start, tok, lexer.pos))
                };
                match (c, self.peek2()) {
                    ('(', _) => {
                        self.bump();
                        return Some((start, Tok::LParen, self.pos));
                    }
                    (')', _) => {
                        self.bump();
                        return Some((start, Tok::RParen, self.pos));
                    }
                    ('>', Some('=')) => return two(self, Tok::Ge),
                    ('<', Some('=')) => return two(self, Tok::Le),
                    ('=', Some('=')) => return two(self, Tok::EqEq),
                    ('!', Some('=')) => return two(self, Tok::Ne),
                    ('>', _) => {
                        self.bump();
                        return Some((start, Tok::Gt, self.pos));
                    }
                    ('<', _) => {
                        self.bump();
                        return Some((start, Tok::Lt, self.pos));
                    }
                    _ => {}
                }
            }
            return Some(self.word());
        }
    }

    fn word(&mut self) -> Spanned<'input> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if self.ends_word(c) && self.pos > start {
                break;
            }
            self.bump();
        }
        let word = &self.text[start..self.pos];
        let tok = match (self.mode, word) {
            (Mode::Checks, "check") => Tok::Check,
            (Mode::Checks | Mode::Global, "with") => Tok::With,
            (Mode::Checks, "if") => Tok::If,
            (Mode::Checks, "then") => Tok::Then,
            (Mode::Checks, "for") => Tok::For,
            (Mode::Checks, "within") => Tok::Within,
            (Mode::Checks, "expose") => Tok::Expose,
            (Mode::Checks, "happens") => Tok::Happens,
            (Mode::Checks, "every") => Tok::Every,
            (Mode::Checks, "jobs") => Tok::Jobs,
            (Mode::Global, "set") => Tok::Set,
            (Mode::Global, "send") => Tok::Send,
            (Mode::Global, "alerts") => Tok::Alerts,
            (Mode::Global, "to") => Tok::To,
            (Mode::Global, "via") => Tok::Via,
            (Mode::Checks, w) if w.bytes().all(|b| b.is_ascii_digit()) => Tok::Int(w),
            (_, w) => Tok::Word(w),
        };
        (start, tok, self.pos)
    }

    fn string(&mut self) -> Spanned<'input> {
        let start = self.pos;
        self.bump();
        let mut value = String::new();
        loop {
            let Some(c) = self.peek() else {
                self.problem(start, self.pos, "unterminated string, expected a closing `\"`");
                break;
            };
            if c == '\n' {
                // Strings do not span lines: stopping here keeps a missing quote from swallowing the rest of the file.
                self.problem(
                    start,
                    self.pos,
                    "unterminated string, expected a closing `\"` before the end of the line",
                );
                break;
            }
            self.bump();
            match c {
                '"' => break,
                '\\' => self.escape(&mut value),
                c => value.push(c),
            }
        }
        (start, Tok::Str(value), self.pos)
    }

    /// Resolves the escapes of Inspeqtor's strings (`\" \\ \n \t \r \xNN \uNNNN \UNNNNNNNN`). Any other
    /// backslash, or a malformed hex escape, is kept as written, so `matching "^app \d+\b"` reaches the regex
    /// engine intact instead of turning `\b` into a backspace.
    fn escape(&mut self, value: &mut String) {
        let Some(c) = self.peek() else {
            value.push('\\');
            return;
        };
        let simple = match c {
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            '\\' | '"' => Some(c),
            _ => None,
        };
        if let Some(ch) = simple {
            self.bump();
            value.push(ch);
            return;
        }
        let digits = match c {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => {
                value.push('\\');
                return;
            }
        };
        let rest = &self.text[self.pos + 1..];
        let hex: String = rest.chars().take(digits).take_while(char::is_ascii_hexdigit).collect();
        let decoded = (hex.len() == digits)
            .then(|| u32::from_str_radix(&hex, 16).ok())
            .flatten()
            .and_then(char::from_u32)
            .filter(|ch| c != 'x' || ch.is_ascii());
        match decoded {
            Some(ch) => {
                self.pos += 1 + hex.len();
                value.push(ch);
            }
            None => value.push('\\'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str, mode: Mode) -> Vec<Tok<'_>> {
        Lexer::tokenize(text, mode).0.into_iter().map(|(_, t, _)| t).collect()
    }

    #[test]
    fn checks_mode_splits_operators_and_parens_but_keeps_metric_words_whole() {
        assert_eq!(
            toks("if memory(rss)>=1.5g then", Mode::Checks),
            vec![
                Tok::If,
                Tok::Word("memory"),
                Tok::LParen,
                Tok::Word("rss"),
                Tok::RParen,
                Tok::Ge,
                Tok::Word("1.5g"),
                Tok::Then
            ]
        );
        assert_eq!(toks("disk:/ > 90%", Mode::Checks), vec![Tok::Word("disk:/"), Tok::Gt, Tok::Word("90%")]);
        assert_eq!(
            toks("a!=b == 3", Mode::Checks),
            vec![Tok::Word("a"), Tok::Ne, Tok::Word("b"), Tok::EqEq, Tok::Int("3")]
        );
    }

    #[test]
    fn global_mode_keeps_inspeqtors_value_atom() {
        assert_eq!(
            toks("set statsd_location localhost:8125 # comment\npassword a<b>(c)", Mode::Global),
            vec![
                Tok::Set,
                Tok::Word("statsd_location"),
                Tok::Word("localhost:8125"),
                Tok::Word("password"),
                Tok::Word("a<b>(c)")
            ]
        );
    }

    #[test]
    fn strings_resolve_escapes_keep_other_backslashes_and_report_unterminated_ones() {
        let (tokens, problems) =
            Lexer::tokenize(r#""b!l$a%rgh^fazz\"" "\x41\u00e9" "^app \d+\b \x{41}" "open"#, Mode::Global);
        let values: Vec<_> = tokens.into_iter().map(|(_, t, _)| t).collect();
        assert_eq!(
            values,
            vec![
                Tok::Str("b!l$a%rgh^fazz\"".into()),
                Tok::Str("Aé".into()),
                Tok::Str(r"^app \d+\b \x{41}".into()),
                Tok::Str("open".into())
            ]
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.starts_with("unterminated string"));
    }
}
