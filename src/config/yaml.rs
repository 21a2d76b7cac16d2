//! The only module that knows which YAML library we use, and the only one that reads YAML
//! text: parsing, giving the tree its shape, and finding the line a key path is on.
//!
//! `serde_yaml` is archived upstream; keeping every call to it here means moving to a maintained
//! fork is a one-line change (the `use` below), not a hunt through the code base.

use std::collections::{HashMap, HashSet};

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess};
use serde::de::{IntoDeserializer, Visitor};
use serde_yaml as backend;
use serde_yaml::Value;

use super::Problem;

/// A YAML document that did not parse, with where it went wrong.
#[derive(Debug)]
pub struct YamlError {
    /// The parser's message, without its own location suffix (we print the location ourselves,
    /// in the `file:line:column` form editors understand).
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// Why a document could not be read as the type asked for.
#[derive(Debug)]
pub enum Unread {
    /// Not YAML at all: the parser cannot go past the first error, so there is one.
    Syntax(YamlError),
    /// YAML, but not of the right shape (unknown key, wrong type, unknown variant): every one
    /// found, each with its key path. Their `line` is left for the caller to locate.
    Shape(Vec<Problem>),
}

/// A list of problems longer than this is cut: nobody fixes a hundred at once, and each one
/// costs another pass over the tree.
const MAX_SHAPE_PROBLEMS: usize = 100;

/// Reads `text` as a `T`, reporting every shape error rather than the first.
///
/// The text is parsed into a tree once (a syntax error stops there). Then, while the tree does
/// not deserialize, the part that failed is reported with its key path and cut out of the tree
/// (an unknown key, the value of the wrong type, the list item), and the rest is tried again, so
/// that two mistakes in two routes are both reported in one run.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Unread> {
    let mut tree: Value = backend::from_str(text).map_err(|err| Unread::Syntax(syntax(err)))?;
    let mut problems = Vec::new();
    let mut cut = Cuts::default();
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(Lenient(&tree)) {
            Ok(value) if problems.is_empty() => return Ok(value),
            Ok(_) => return Err(Unread::Shape(problems)),
            Err(err) => err,
        };
        let message = err.inner().to_string();
        let mut at = steps(err.path());
        let missing = quoted_after(&message, "missing field `");
        let unknown = quoted_after(&message, "unknown field `");
        if let Some(field) = unknown.map(|f| Step::Key(f.to_owned())) {
            // The key itself is what the user has to fix, and its line is the one to show.
            if at.last() != Some(&field) {
                at.push(field);
            }
        }
        let original = cut.original(&at);
        // A field missing because we cut it out ourselves is not news; its parent still has to
        // go, since serde gives up on a struct at the first missing field.
        let ours = missing.is_some_and(|field| {
            let mut field_path = original.clone();
            field_path.push(Step::Key(field.to_owned()));
            cut.removed.contains(&render(&field_path))
        });
        if !ours {
            problems.push(Problem {
                path: render(&original),
                message,
                line: None,
            });
        }
        if problems.len() >= MAX_SHAPE_PROBLEMS {
            problems.push(Problem {
                path: String::new(),
                message: format!("stopped after {MAX_SHAPE_PROBLEMS} problems"),
                line: None,
            });
            return Err(Unread::Shape(problems));
        }
        // Nothing left to cut (an error about the whole document): this is as far as it goes.
        if !cut.remove(&mut tree, &at, &original) {
            return Err(Unread::Shape(problems));
        }
    }
}

fn syntax(err: backend::Error) -> YamlError {
    let location = err.location();
    let mut message = err.to_string();
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    YamlError {
        message,
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
    }
}

/// The name in serde's stable wording "unknown field `x`, …" / "missing field `x`".
fn quoted_after<'a>(message: &'a str, opening: &str) -> Option<&'a str> {
    message.strip_prefix(opening)?.split('`').next()
}

/// What has been cut out of the tree so far, so that later errors are reported under the key
/// paths of the file as written.
#[derive(Default)]
struct Cuts {
    /// For each list an item was cut from (by its path in the file), the original indices of
    /// the items still in it.
    kept: HashMap<String, Vec<usize>>,
    /// The paths in the file of every key cut out.
    removed: HashSet<String>,
}

impl Cuts {
    /// The path in the file of `at`, a path in the tree as cut.
    fn original(&self, at: &[Step]) -> Vec<Step> {
        let mut path = Vec::with_capacity(at.len());
        for step in at {
            let step = match step {
                Step::Index(i) => Step::Index(
                    self.kept
                        .get(&render(&path))
                        .and_then(|kept| kept.get(*i).copied())
                        .unwrap_or(*i),
                ),
                key => key.clone(),
            };
            path.push(step);
        }
        path
    }

    /// Cuts the node at `at` out of `tree`; false when there is nothing to cut.
    fn remove(&mut self, tree: &mut Value, at: &[Step], original: &[Step]) -> bool {
        let Some((last, parent)) = at.split_last() else {
            return false;
        };
        let Some(parent_original) = original.get(..parent.len()) else {
            return false;
        };
        let mut node = tree;
        for step in parent {
            let next = match (step, node) {
                (Step::Key(key), Value::Mapping(map)) => {
                    map.iter_mut().find(|(k, _)| is_key(k, key)).map(|(_, v)| v)
                }
                (Step::Index(i), Value::Sequence(items)) => items.get_mut(*i),
                _ => None,
            };
            match next {
                Some(next) => node = next,
                None => return false,
            }
        }
        match (last, node) {
            (Step::Key(key), Value::Mapping(map)) => {
                let Some(found) = map.keys().find(|k| is_key(k, key)).cloned() else {
                    return false;
                };
                map.shift_remove(&found);
                self.removed.insert(render(original));
                true
            }
            (Step::Index(i), Value::Sequence(items)) if *i < items.len() => {
                items.remove(*i);
                let kept = self
                    .kept
                    .entry(render(parent_original))
                    .or_insert_with(|| (0..=items.len()).collect());
                if *i < kept.len() {
                    kept.remove(*i);
                }
                true
            }
            _ => false,
        }
    }
}

/// Whether a mapping key is `key` as the shape saw it (a plain `1:` is the field `1`).
fn is_key(value: &Value, key: &str) -> bool {
    match value {
        Value::String(s) => s == key,
        Value::Number(n) => n.to_string() == key,
        Value::Bool(b) => b.to_string() == key,
        _ => false,
    }
}

fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    use serde_path_to_error::Segment;
    let mut steps = Vec::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => steps.push(Step::Index(*index)),
            Segment::Map { key } => steps.push(Step::Key(key.clone())),
            // Variants with data are not part of the file's key paths; nothing below an
            // unknown step can be named.
            Segment::Enum { .. } => {}
            Segment::Unknown => break,
        }
    }
    steps
}

/// Deserializes from the parsed tree, close to what `serde_yaml::from_str` did from the text
/// when the file was read at once: a plain integer such as `1234` is also a string where one
/// is wanted (a user name, a key prefix), as it was. The tree keeps a number's value, not its
/// spelling, so only integers, which are written as they print, are taken as strings; `1.10`
/// or `true` where a string is wanted is refused (quote it) rather than silently becoming
/// `1.1`. Everything else is the tree's own deserializer.
struct Lenient<'de>(&'de Value);

macro_rules! as_the_tree_does {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method(visitor)
        }
    )*};
}

impl<'de> Deserializer<'de> for Lenient<'de> {
    type Error = backend::Error;

    as_the_tree_does! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_ignored_any
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Number(n) if n.is_i64() || n.is_u64() => visitor.visit_string(n.to_string()),
            Value::Tagged(tagged) => Lenient(&tagged.value).deserialize_string(visitor),
            other => other.deserialize_string(visitor),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Sequence(items) => visitor.visit_seq(Items(items.iter())),
            other => other.deserialize_seq(visitor),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Mapping(map) => visitor.visit_map(Entries {
                entries: map.iter(),
                value: None,
            }),
            other => other.deserialize_map(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            // A plain `1` or `true` names a (unit) variant, as in `from_str`, so the message
            // is the usual "unknown variant".
            Value::Number(n) => visitor.visit_enum(n.to_string().into_deserializer()),
            Value::Bool(b) => visitor.visit_enum(b.to_string().into_deserializer()),
            other => other.deserialize_enum(name, variants, visitor),
        }
    }
}

struct Items<'de>(std::slice::Iter<'de, Value>);

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = backend::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|item| seed.deserialize(Lenient(item)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'de> {
    entries: backend::mapping::Iter<'de>,
    value: Option<&'de Value>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = backend::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(Lenient(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(Lenient(value)),
            None => Err(de::Error::custom("a value was asked for before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Key paths and where they are in the text

/// One step of a key path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `routes[1].upstreams[0]`, the form every message uses.
fn render(steps: &[Step]) -> String {
    let mut text = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Step::Index(i) => {
                text.push('[');
                text.push_str(&i.to_string());
                text.push(']');
            }
        }
    }
    text
}

/// The steps of a rendered key path, as far as it reads as one.
fn parse_path(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let Some((index, tail)) = after.split_once(']') else {
                break;
            };
            let Ok(index) = index.parse() else {
                break;
            };
            steps.push(Step::Index(index));
            rest = tail;
        } else {
            let rest_of_key = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_of_key.find(['.', '[']).unwrap_or(rest_of_key.len());
            let (key, tail) = rest_of_key.split_at(end);
            if key.is_empty() {
                break;
            }
            steps.push(Step::Key(key.to_owned()));
            rest = tail;
        }
    }
    steps
}

/// One line of YAML that holds something: its number (from 1), how far it is indented, and
/// its text from there on, without a trailing comment.
struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

/// A block node: it starts at `text`, column `column` of line `start`, and its entries are
/// that one and every later line indented exactly as far, up to the first line indented less.
struct Node<'a> {
    start: usize,
    column: usize,
    text: &'a str,
}

/// The line (from 1) of the deepest part of `path` found in block-style YAML: for
/// `routes[1].upstreams[0]`, the line of that upstream, or of `upstreams:` when the list is
/// written in flow style (`[...]`) on one line. `None` when not even its first key is found.
///
/// A reader of the layout, not a YAML parser: it follows indentation, `key:` lines and `- `
/// items, which is how configuration files are written. On anything stranger it may stop
/// early or point at a nearby line; it never fails.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<Line> = text
        .lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let body = raw.trim_start_matches(' ');
            let indent = raw.len() - body.len();
            let body = strip_comment(body).trim_end();
            let directive = indent == 0 && (body.starts_with("---") || body.starts_with('%'));
            (!body.is_empty() && !directive && body != "...").then_some(Line {
                number: i + 1,
                indent,
                text: body,
            })
        })
        .collect();
    let first = lines.first()?;
    let mut node = Node {
        start: 0,
        column: first.indent,
        text: first.text,
    };
    let mut found = None;
    for step in parse_path(path) {
        let Some((at, value)) = lookup(&lines, &node, &step) else {
            break;
        };
        found = lines.get(at).map(|line| line.number);
        match value {
            Some(value) => node = value,
            None => break,
        }
    }
    found
}

/// Finds `step` among the entries of `node`: the index of its line, and the node of its value
/// when that is a block one can look into.
fn lookup<'a>(
    lines: &[Line<'a>],
    node: &Node<'a>,
    step: &Step,
) -> Option<(usize, Option<Node<'a>>)> {
    let later = lines
        .iter()
        .enumerate()
        .skip(node.start + 1)
        .take_while(|(_, line)| line.indent >= node.column)
        .filter(|(_, line)| line.indent == node.column)
        .map(|(at, line)| (at, line.text));
    let mut entries = std::iter::once((node.start, node.text)).chain(later);
    match step {
        Step::Key(key) => entries.find_map(|(at, text)| {
            let rest = value_of(text, key)?;
            let column = node.column + (text.len() - rest.len());
            Some((at, below(lines, at, node.column, column, rest, true)))
        }),
        Step::Index(index) => {
            let (at, text) = entries
                .filter(|(_, text)| *text == "-" || text.starts_with("- "))
                .nth(*index)?;
            let rest = text.get(1..).unwrap_or_default();
            let inline = rest.trim_start();
            let column = node.column + (text.len() - inline.len());
            Some((at, below(lines, at, node.column, column, inline, false)))
        }
    }
}

/// The node of an entry's value: on the same line after `- `, or on the lines below.
fn below<'a>(
    lines: &[Line<'a>],
    at: usize,
    entry_column: usize,
    value_column: usize,
    rest: &'a str,
    after_key: bool,
) -> Option<Node<'a>> {
    // An anchor or a tag before a block value leaves the value on the next lines.
    let rest = match rest.split_once(char::is_whitespace) {
        _ if !rest.starts_with(['&', '!']) => rest,
        Some((_, value)) => value.trim_start(),
        None => "",
    };
    if rest.is_empty() {
        let next = lines.get(at + 1)?;
        // A list may sit at its key's own indentation (`routes:` then `- match:`).
        let list_at_key = after_key && next.indent == entry_column && next.text.starts_with('-');
        return (next.indent > entry_column || list_at_key).then_some(Node {
            start: at + 1,
            column: next.indent,
            text: next.text,
        });
    }
    // A key's value on its own line is a scalar, a flow collection or a block scalar: nothing
    // deeper has a line of its own. An item's value may be a block mapping that starts here.
    (!after_key).then_some(Node {
        start: at,
        column: value_column,
        text: rest,
    })
}

/// What follows `key:` when `text` is that mapping entry, trimmed at the start.
fn value_of<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let after_key = match text.chars().next()? {
        quote @ ('"' | '\'') => {
            let inner = text.get(1..)?;
            let (name, after) = inner.split_once(quote)?;
            (name == key).then_some(after)?
        }
        // `keys:` is another key: what follows the name must be (blanks and) the colon.
        _ => text.strip_prefix(key)?,
    };
    let value = after_key.trim_start().strip_prefix(':')?;
    (value.is_empty() || value.starts_with(char::is_whitespace)).then_some(value.trim_start())
}

/// The text before a `#` comment, minding quotes.
fn strip_comment(text: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    let mut previous_blank = true;
    for (i, c) in text.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '#' && previous_blank => return text.get(..i).unwrap_or(text),
            None if (c == '"' || c == '\'') && previous_blank => quote = Some(c),
            None => {}
        }
        previous_blank = c.is_whitespace() || matches!(c, '[' | '{' | ',' | ':' | '-');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const CONFIG: &str = "\
# a comment
listen: \"127.0.0.1:8080\"   # trailing comment
store:
  url: \"memory://\"
routes:
  - match: { path_prefix: \"/api\" }
    upstreams:
      - \"http://127.0.0.1:9001\"
      - \"http://127.0.0.1:9002\"   # the second
    session: required
  - match:
      path_prefix: \"/\"
      host: app.example.com
    upstreams: [\"http://127.0.0.1:9003\"]
session:
  cookie:
    name: \"SESSION\"
";

    #[test]
    fn locates_the_deepest_part_found() {
        for (path, line) in [
            ("listen", Some(2)),
            ("store", Some(3)),
            ("store.url", Some(4)),
            ("routes", Some(5)),
            ("routes[0]", Some(6)),
            ("routes[0].match", Some(6)),
            ("routes[0].match.path_prefix", Some(6)),
            ("routes[0].upstreams", Some(7)),
            ("routes[0].upstreams[1]", Some(9)),
            ("routes[0].session", Some(10)),
            ("routes[1]", Some(11)),
            ("routes[1].match.host", Some(13)),
            ("routes[1].upstreams[0]", Some(14)),
            ("routes[2].upstreams[0]", Some(5)),
            ("session.cookie.name", Some(17)),
            ("session.cookie.signing_keys", Some(16)),
            ("session.idle_timeout", Some(15)),
            ("timeouts.header_read", None),
            ("", None),
        ] {
            assert_eq!(locate(CONFIG, path), line, "{path}");
        }
    }

    #[test]
    fn lists_at_their_keys_indentation_and_quoted_keys() {
        let text =
            "routes:\n- match: {}\n  upstreams: []\n- \"match\": {}\n  'upstreams':\n  - a\n";
        assert_eq!(locate(text, "routes[1].upstreams[0]"), Some(6));
        assert_eq!(locate(text, "routes[0].upstreams"), Some(3));
        assert_eq!(locate(text, "routes[1].match"), Some(4));
        let anchored = "store: &s\n  url: x\nroutes: !tag\n  - a\n";
        assert_eq!(locate(anchored, "store.url"), Some(2));
        assert_eq!(locate(anchored, "routes[0]"), Some(4));
        // A key that only begins like another is not it; `#` in quotes is no comment.
        let text = "listener: 1\nlisten: \"a#b\" # c\n";
        assert_eq!(locate(text, "listen"), Some(2));
    }

    #[test]
    fn odd_inputs_never_panic() {
        let texts = [
            "",
            "\n\n\n",
            "-",
            "- - -",
            ":",
            "::::",
            "a:",
            "a:\n",
            "a: |\n  b: c\n",
            "\t\tkey:\n\tvalue",
            "key: \"unterminated\n  x: y",
            "'a",
            "\"",
            "# only a comment",
            "---\n...\n%YAML 1.2",
            "é: ü\n  ß: 漢字\n",
            "a:\r\n  b: c\r\n",
            "routes: [ {match: {path_prefix: \"/\"},\n  upstreams: [x]} ]",
            "    deep: 1\nshallow: 2\n        deeper: 3",
            "- a\n  - b\n    - c\n- d",
            "\u{feff}listen: x",
            "a: &x\nb: *x\n",
            "- &\n- !\n- ! x",
        ];
        let paths = [
            "",
            "a",
            "a.b",
            "a[0]",
            "[0]",
            "[",
            "]",
            "a[",
            "a[x]",
            "a[99999999999999999999999]",
            "a..b",
            ".",
            "routes[0].match.path_prefix",
            "é.ß",
            "listen",
        ];
        for text in texts {
            for path in paths {
                let _ = locate(text, path);
            }
        }
        assert_eq!(locate("a:\r\n  b: c\r\n", "a.b"), Some(2));
        assert_eq!(locate("é: ü\n  ß: 漢字\n", "é"), Some(1));
    }

    proptest::proptest! {
        #[test]
        fn locate_never_panics(
            text in "[ \\-:#\"'\n\r\ta-c\\[\\]{}é&!|>]{0,160}",
            path in "[a-c.\\[\\]0-9]{0,16}",
        ) {
            let _ = locate(&text, &path);
        }

        #[test]
        fn reading_never_panics(text in "[ \\-:#\"'\n\ta-z0-9\\[\\]{}&*!|>,]{0,160}") {
            let _ = from_str::<Doc>(&text);
        }
    }

    #[test]
    fn paths_render_and_parse_back() {
        for path in [
            "routes[1].upstreams[0]",
            "session.cookie.name",
            "a[0][1]",
            "x",
        ] {
            assert_eq!(render(&parse_path(path)), path);
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: String,
        #[serde(default)]
        items: Vec<Item>,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        id: u32,
        #[serde(default)]
        mode: Mode,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        flag: bool,
        #[serde(default)]
        label: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        #[default]
        On,
        Off,
    }

    fn shape_errors(text: &str) -> Vec<(String, String)> {
        match from_str::<Doc>(text) {
            Err(Unread::Shape(problems)) => {
                problems.into_iter().map(|p| (p.path, p.message)).collect()
            }
            other => panic!("expected shape errors, got {other:?}"),
        }
    }

    #[test]
    fn every_shape_error_is_reported_with_its_path_in_the_file() {
        let text = "name: x\nitems:\n  - id: 1\n    colour: red\n  - id: 2\n  - id: 3\n    mode: sometimes\n  - id: [4]\ninner:\n  flag: 1\n  size: 2\nextra: 1\n";
        let errors = shape_errors(text);
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "items[0].colour",
                "items[2].mode",
                "items[3].id",
                "inner.flag",
                "inner.size",
                "extra"
            ],
            "{errors:?}"
        );
        assert!(
            errors[0].1.starts_with("unknown field `colour`"),
            "{errors:?}"
        );
        assert!(
            errors[1].1.contains("unknown variant `sometimes`"),
            "{errors:?}"
        );
    }

    #[test]
    fn missing_fields_are_reported_once() {
        let errors = shape_errors("items:\n  - mode: off\n");
        assert_eq!(
            errors,
            [
                ("items[0]".to_owned(), "missing field `id`".to_owned()),
                (String::new(), "missing field `name`".to_owned()),
            ]
        );
        let errors = shape_errors("name: [x]\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "name");
    }

    #[test]
    fn plain_scalars_are_strings_where_strings_are_wanted() {
        let doc: Doc = match from_str("name: 1234\ninner: { flag: true, label: -7 }\n") {
            Ok(doc) => doc,
            Err(err) => panic!("{err:?}"),
        };
        assert_eq!(doc.name, "1234");
        assert!(doc.inner.as_ref().is_some_and(|i| i.flag));
        assert_eq!(doc.inner.and_then(|i| i.label).as_deref(), Some("-7"));
        // Their spelling is not kept: refused rather than changed.
        for (text, kind) in [
            ("name: 1.10\n", "floating point"),
            ("name: true\n", "boolean"),
        ] {
            let errors = shape_errors(text);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].0, "name");
            assert!(errors[0].1.contains(kind), "{errors:?}");
        }
        let doc: Doc = match from_str("name: x\nitems:\n  - { id: 1, mode: off }\n") {
            Ok(doc) => doc,
            Err(err) => panic!("{err:?}"),
        };
        assert_eq!(
            doc.items.first().map(|i| (i.id, &i.mode)),
            Some((1, &Mode::Off))
        );
    }

    #[test]
    fn syntax_errors_stop_with_line_and_column() {
        match from_str::<Doc>("name: [\n") {
            Err(Unread::Syntax(err)) => {
                assert!(err.line.is_some() && err.column.is_some(), "{err:?}");
                assert!(!err.message.contains(" at line "), "{err:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn many_errors_are_cut_short() {
        let mut text = "name: x\nitems:\n".to_owned();
        for _ in 0..500 {
            text.push_str("  - { id: 1, bad: 1 }\n");
        }
        let errors = shape_errors(&text);
        assert_eq!(errors.len(), MAX_SHAPE_PROBLEMS + 1);
        assert_eq!(
            errors.last().map(|(p, _)| p.as_str()),
            Some(""),
            "the note that the list is cut"
        );
    }
}
