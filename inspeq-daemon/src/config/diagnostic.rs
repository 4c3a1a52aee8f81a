//! Diagnostics as values, and the compiler-style renderer `inspeqctl check` prints.
//!
//! A diagnostic is self-contained (it carries its source line), so the renderer needs no file access and a list of
//! diagnostics can be sorted, compared in tests and sent over the control socket as they are.

use std::fmt::{self, Write as _};

use crate::config::ast::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// Width of the underlined text in characters (at least 1).
    pub width: usize,
    /// One line: what is wrong and what was expected.
    pub message: String,
    /// The source line the diagnostic points into, without its newline.
    pub source_line: String,
}

impl Diagnostic {
    #[must_use]
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `path:line:col: severity: message`, the form fixtures compare and editors jump to.
    #[must_use]
    pub fn short(&self) -> String {
        format!("{}:{}:{}: {}: {}", self.path, self.line, self.column, self.severity, self.message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// Locates spans in one file's text and turns them into [`Diagnostic`]s.
pub struct SourceFile<'a> {
    pub path: &'a str,
    pub text: &'a str,
    /// Byte offset of the start of each line, so locating a span does not rescan the file (a file with thousands
    /// of mistakes would otherwise take quadratic time).
    line_starts: Vec<usize>,
}

impl<'a> SourceFile<'a> {
    #[must_use]
    pub fn new(path: &'a str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        SourceFile { path, text, line_starts }
    }

    pub fn diagnostic(&self, severity: Severity, span: Span, message: impl Into<String>) -> Diagnostic {
        let start = clamp_to_char_boundary(self.text, span.start);
        let end = clamp_to_char_boundary(self.text, span.end.max(start));
        let line = self.line_starts.partition_point(|&s| s <= start);
        let line_start = self.line_starts[line - 1];
        let line_end = self.text[start..].find('\n').map_or(self.text.len(), |i| start + i);
        let column = self.text[line_start..start].chars().count() + 1;
        let width = self.text[start..end.min(line_end)].chars().count().max(1);
        let source_line = self.text[line_start..line_end].trim_end_matches('\r').to_owned();
        let message = message.into().replace(['\n', '\r'], " ");
        Diagnostic { severity, path: self.path.to_owned(), line, column, width, message, source_line }
    }

    pub fn error(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Severity::Error, span, message)
    }

    pub fn warning(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Severity::Warning, span, message)
    }

    /// A span for the end of the file (where "unexpected end of file" points).
    #[must_use]
    pub fn end(&self) -> Span {
        Span::new(self.text.len(), self.text.len())
    }
}

fn clamp_to_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Renders diagnostics compiler-style:
///
/// ```text
/// services.d/web.inq:3:4: error: unknown metric `memory:rsss`, expected one of memory:rss, memory:total_rss
///   |
/// 3 | if memory:rsss > 2g then alert
///   |    ^^^^^^^^^^^
/// ```
#[must_use]
pub fn render(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let gutter = d.line.to_string().len();
        let pad = " ".repeat(gutter);
        // Tabs stay tabs under the caret so it lines up whatever the terminal's tab width.
        let lead: String = d
            .source_line
            .chars()
            .take(d.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let shown: String = d.source_line.chars().map(|c| if c.is_control() && c != '\t' { ' ' } else { c }).collect();
        let _ = writeln!(out, "{}", d.short());
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{} | {}", d.line, shown);
        let _ = writeln!(out, "{pad} | {lead}{}", "^".repeat(d.width));
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if !diagnostics.is_empty() {
        let _ = writeln!(out, "{errors} error{}, {warnings} warning{}", plural(errors), plural(warnings));
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_path_position_source_line_and_caret() {
        let text = "check host\n\tif swapp > 20% then alert\n";
        let file = SourceFile::new("host.inq", text);
        let at = text.find("swapp").unwrap();
        let d = file.error(Span::new(at, at + 5), "unknown metric `swapp`, expected swap");
        assert_eq!(
            render(&[d]),
            "host.inq:2:5: error: unknown metric `swapp`, expected swap\n  |\n2 | \tif swapp > 20% then alert\n  | \t   ^^^^^\n1 error, 0 warnings\n"
        );
    }

    #[test]
    fn end_of_file_points_past_the_last_character() {
        let file = SourceFile::new("x.inq", "check host if");
        let d = file.error(file.end(), "unexpected end of file");
        assert_eq!((d.line, d.column, d.width), (1, 14, 1));
    }
}
