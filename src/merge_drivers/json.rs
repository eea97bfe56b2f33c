//! JSON: objects merged key by key, recursively, left's bytes kept where nothing came from the other side.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::{FileMerge, Node, maps_equal, merge_value, outcome, parse_dotted, set_path};

// serde_json's own `Map` is sorted unless its `preserve_order` feature is on, and that
// feature would also reorder every `json!` the CLI prints; a tree of our own keeps the
// order with no effect elsewhere.
type JNode = Node<Value>;

impl<'de> Deserialize<'de> for Node<Value> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = JNode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<JNode, E> {
        Ok(Node::Scalar(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<JNode, E> {
        Ok(Node::Scalar(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<JNode, E> {
        Ok(Node::Scalar(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<JNode, E> {
        Ok(Node::Scalar(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<JNode, E> {
        Ok(Node::Scalar(Value::from(v)))
    }
    fn visit_string<E>(self, v: String) -> Result<JNode, E> {
        Ok(Node::Scalar(Value::from(v)))
    }
    fn visit_unit<E>(self) -> Result<JNode, E> {
        Ok(Node::Scalar(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JNode, A::Error> {
        let mut v = Vec::new();
        while let Some(e) = seq.next_element()? {
            v.push(e);
        }
        Ok(Node::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JNode, A::Error> {
        // A repeated key keeps its first position and its last value, like serde_json.
        let mut m: Vec<(String, JNode)> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value()?;
            match at.get(&k) {
                Some(&i) => m[i].1 = v,
                None => {
                    at.insert(k.clone(), m.len());
                    m.push((k, v));
                }
            }
        }
        Ok(Node::Map(m))
    }
}

impl Serialize for Node<Value> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Node::Array(a) => s.collect_seq(a),
            Node::Scalar(v) => v.serialize(s),
        }
    }
}

fn parse(s: &str) -> Option<JNode> {
    serde_json::from_str(s).ok()
}

pub(super) fn merge(base: Option<&str>, left: &str, right: &str) -> FileMerge {
    let (Some(l), Some(r)) = (parse(left), parse(right)) else {
        return FileMerge::Conflict;
    };
    let b = base.and_then(parse);
    let mut conflicts = Vec::new();
    let merged = merge_value(
        b.as_ref(),
        Some(&l),
        Some(&r),
        &mut Vec::new(),
        &mut conflicts,
    );
    // A conflict at the root: the top level is not an object on both sides.
    let Some(merged) = merged.filter(|_| conflicts.iter().all(|p| !p.is_empty())) else {
        return FileMerge::Conflict;
    };
    let names = conflicts.iter().map(|p| super::dotted(p)).collect();
    let bytes = if merged == l {
        left.as_bytes().to_vec()
    } else if merged == r {
        right.as_bytes().to_vec()
    } else {
        render(&merged, left, right)
    };
    outcome(bytes, names)
}

pub(super) fn apply(current: &str, other: &str, keys: &[String]) -> Option<Vec<u8>> {
    let Node::Map(c) = parse(current)? else {
        return None;
    };
    let o = parse(other)?;
    let mut want = c.clone();
    for k in keys {
        set_path(&mut want, &parse_dotted(k)?, super::as_map(&o));
    }
    if maps_equal(&want, &c) {
        return Some(current.as_bytes().to_vec());
    }
    let want = Node::Map(want);
    if want == o {
        return Some(other.as_bytes().to_vec());
    }
    Some(render(&want, current, other))
}

/// Pretty-printed with left's indentation (the first indented line's leading whitespace); a
/// left written on one line gets one line, unless right is the one with line breaks.
fn render(v: &JNode, left: &str, right: &str) -> Vec<u8> {
    let style = if left.trim().contains('\n') || !right.trim().contains('\n') {
        left
    } else {
        right
    };
    let mut out = Vec::new();
    let written = if style.trim().contains('\n') {
        let indent = indent_of(style);
        let f = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
        v.serialize(&mut serde_json::Serializer::with_formatter(&mut out, f))
    } else {
        v.serialize(&mut serde_json::Serializer::new(&mut out))
    };
    written.expect("writing JSON to a Vec cannot fail");
    if style.ends_with('\n') {
        out.push(b'\n');
    }
    if style.contains("\r\n") {
        // serde_json writes `\n`; a raw line break cannot occur inside a JSON string.
        return String::from_utf8_lossy(&out)
            .replace('\n', "\r\n")
            .into_bytes();
    }
    out
}

fn indent_of(s: &str) -> &str {
    s.split('\n')
        .skip(1)
        .map(|l| &l[..l.len() - l.trim_start_matches([' ', '\t']).len()])
        .find(|i| !i.is_empty())
        .unwrap_or("  ")
}
