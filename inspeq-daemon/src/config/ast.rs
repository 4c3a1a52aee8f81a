//! Syntax trees exactly as written, with byte spans, produced by the two grammars.
//!
//! Nothing here is validated beyond the shape of the text: words such as `restart`, `1.5g` or `memory:rss` stay
//! strings so that the semantic pass (`check.rs`) can say precisely what is wrong with them and where.

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    #[must_use]
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
}

/// A string from the source with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    pub value: String,
    pub span: Span,
    /// Written as `"..."`: quoted words are never keywords or numbers.
    pub quoted: bool,
}

impl Text {
    #[must_use]
    pub fn word(value: &str, start: usize, end: usize) -> Self {
        Text { value: value.to_owned(), span: Span::new(start, end), quoted: false }
    }

    #[must_use]
    pub fn quoted(value: String, start: usize, end: usize) -> Self {
        Text { value, span: Span::new(start, end), quoted: true }
    }
}

// ---- inspeq.conf ----

#[derive(Clone, Debug, PartialEq, Default)]
pub struct GlobalFile {
    pub statements: Vec<GlobalStatement>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum GlobalStatement {
    Set { key: Text, value: Text, span: Span },
    SendAlerts(SendAlerts),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SendAlerts {
    pub route: Option<Text>,
    pub channel: Text,
    /// Comma-separated groups as written. A group is normally `key value`; a lone value continues the previous
    /// key's list (Inspeqtor #131: `to_email a@x, b@y`).
    pub params: Vec<Vec<Text>>,
    pub span: Span,
}

// ---- *.inq ----

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ChecksFile {
    pub checks: Vec<CheckBlock>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckBlock {
    /// `host`, `service`, `process` or `jobs` (validated later).
    pub kind: Text,
    pub name: Option<Text>,
    pub params: Vec<(Text, Text)>,
    pub items: Vec<Item>,
    /// Span of `check KIND [NAME]`, where diagnostics about the whole check point.
    pub head: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Rule(RuleText),
    Expose(Vec<Text>),
    Job(JobText),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuleText {
    pub condition: Condition,
    pub actions: Vec<ActionText>,
    /// From `if` to the end of the last action.
    pub span: Span,
    /// From the first word after `if` to the word before `then`, for display.
    pub condition_span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `METRIC OP AMOUNT [for N cycles]` or `METRIC OP AMOUNT within WINDOW`.
    Compare {
        metric: MetricText,
        op: (Op, Span),
        amount: Text,
        /// `for N [cycles]`.
        for_cycles: Option<(Text, Option<Text>)>,
        within: Option<Vec<Text>>,
    },
    /// `exited`, `crashed`, `oom_killed`, `signaled [SIG]`: a word and an optional argument.
    Event { name: Text, arg: Option<Text> },
    /// `redis is unreachable [for N cycles]`: a subject, a linking word and a state, judged each cycle.
    State { subject: Text, is: Text, state: Text, for_cycles: Option<(Text, Option<Text>)> },
    /// `worker crashed > 3 within 1 minute`: an event of two words, counted in a window.
    EventCount { name: Text, arg: Text, op: (Op, Span), amount: Text, within: Vec<Text> },
    /// `port 8080 is closed`, `http "URL" with status 200 fails for 3 cycles`, `tls "host:443" expires within 14
    /// days`, `http "URL" time > 500ms`, `listening 8080 stopped`: a kind of probe, what it reaches (a number or a
    /// quoted string), its options, and what is asked of it.
    Probe { kind: Text, target: Text, params: Vec<(Text, Text)>, test: Box<ProbeTest> },
}

/// What a probe rule asks, as written after the probe.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeTest {
    /// `is closed [for N cycles]`.
    State { is: Text, state: Text, for_cycles: Option<(Text, Option<Text>)> },
    /// `fails [for N cycles]`, `stopped`.
    Verb { verb: Text, for_cycles: Option<(Text, Option<Text>)> },
    /// `expires within 14 days`.
    Within { verb: Text, within: Vec<Text> },
    /// `time > 500ms [for N cycles]`.
    Compare { measure: Text, op: (Op, Span), amount: Text, for_cycles: Option<(Text, Option<Text>)> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricText {
    pub family: Text,
    pub name: Option<Text>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Gt,
    Lt,
    Ge,
    Le,
    Eq,
    Ne,
}

impl Op {
    #[must_use]
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    #[must_use]
    #[expect(clippy::float_cmp, reason = "`==` and `!=` in a rule mean exact comparison, as written")]
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Lt => value < threshold,
            Op::Ge => value >= threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ActionText {
    pub verb: Text,
    pub args: Vec<Text>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobText {
    pub name: Text,
    pub count: Option<Text>,
    pub period: Text,
    pub span: Span,
}

/// Splits a metric word at its first `:` (`disk:/var/lib` is family `disk`, name `/var/lib`).
#[must_use]
pub fn metric_from_word(word: &str, start: usize, end: usize) -> MetricText {
    match word.split_once(':') {
        Some((family, name)) => {
            let colon = start + family.len();
            MetricText {
                family: Text::word(family, start, colon),
                name: Some(Text::word(name, colon + 1, end)),
                span: Span::new(start, end),
            }
        }
        None => MetricText { family: Text::word(word, start, end), name: None, span: Span::new(start, end) },
    }
}
