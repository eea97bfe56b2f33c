//! TOML: tables merged key by key with `toml_edit`, left's comments and layout kept.

use std::collections::HashSet;

use toml_edit::{Decor, DocumentMut, InlineTable, Item, Key, RawString, Table, TableLike, Value};

use super::{FileMerge, Map, Node, index, maps_equal, merge_maps, outcome, set_path};

/// TOML scalars compared by value, not by how they are written (`0x10` is `16`).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Str(String),
    Int(i64),
    /// The bits, so that `nan` equals itself.
    Float(u64),
    Bool(bool),
    Datetime(String),
}

type TNode = Node<Scalar>;

fn like_node(t: &dyn TableLike) -> Map<Scalar> {
    t.iter()
        .filter_map(|(k, i)| item_node(i).map(|n| (k.to_owned(), n)))
        .collect()
}

/// Tables, inline tables and dotted keys are all maps; arrays of tables are arrays.
fn item_node(i: &Item) -> Option<TNode> {
    match i {
        Item::None => None,
        Item::Value(v) => Some(value_node(v)),
        Item::Table(t) => Some(Node::Map(like_node(t))),
        Item::ArrayOfTables(a) => Some(Node::Array(
            a.iter().map(|t| Node::Map(like_node(t))).collect(),
        )),
    }
}

fn value_node(v: &Value) -> TNode {
    match v {
        Value::String(s) => Node::Scalar(Scalar::Str(s.value().clone())),
        Value::Integer(i) => Node::Scalar(Scalar::Int(*i.value())),
        Value::Float(f) => Node::Scalar(Scalar::Float(f.value().to_bits())),
        Value::Boolean(b) => Node::Scalar(Scalar::Bool(*b.value())),
        Value::Datetime(d) => Node::Scalar(Scalar::Datetime(d.value().to_string())),
        Value::Array(a) => Node::Array(a.iter().map(value_node).collect()),
        Value::InlineTable(t) => Node::Map(like_node(t)),
    }
}

pub(super) fn doc_map(d: &DocumentMut) -> Map<Scalar> {
    like_node(d.as_table())
}

pub(super) fn merge(base: Option<&str>, left: &str, right: &str) -> FileMerge {
    let (Ok(mut ldoc), Ok(rdoc)) = (left.parse::<DocumentMut>(), right.parse::<DocumentMut>())
    else {
        return FileMerge::Conflict;
    };
    let (l, r) = (doc_map(&ldoc), doc_map(&rdoc));
    let b = base
        .and_then(|s| s.parse::<DocumentMut>().ok())
        .map(|d| doc_map(&d));
    let mut conflicts = Vec::new();
    let want = merge_maps(b.as_deref(), &l, &r, &mut Vec::new(), &mut conflicts);
    let names = conflicts.iter().map(|p| super::dotted(p)).collect();
    let bytes = if maps_equal(&want, &l) {
        left.as_bytes().to_vec()
    } else if maps_equal(&want, &r) {
        right.as_bytes().to_vec()
    } else {
        let known = [left, base.unwrap_or("")];
        match render(&mut ldoc, &l, &want, &rdoc, b.as_deref(), &known) {
            Some(s) => s.into_bytes(),
            None => return FileMerge::Conflict,
        }
    };
    outcome(bytes, names)
}

pub(super) fn apply(current: &str, other: &str, keys: &[String]) -> Option<Vec<u8>> {
    let mut cdoc = current.parse::<DocumentMut>().ok()?;
    let odoc = other.parse::<DocumentMut>().ok()?;
    let (c, o) = (doc_map(&cdoc), doc_map(&odoc));
    let mut want = c.clone();
    for k in keys {
        set_path(&mut want, &super::parse_dotted(k)?, Some(o.as_slice()));
    }
    if maps_equal(&want, &c) {
        return Some(current.as_bytes().to_vec());
    }
    render(&mut cdoc, &c, &want, &odoc, None, &[current]).map(String::into_bytes)
}

/// Edits `doc` (which reads as `have`) until it reads as `want`, taking whatever it lacks
/// from `right`; then checks that the text written reads back as `want`. `known` is the
/// text already in the result's history (left, base): comment lines from it are not copied
/// again with right's items.
fn render(
    doc: &mut DocumentMut,
    have: &[(String, TNode)],
    want: &[(String, TNode)],
    right: &DocumentMut,
    base: Option<&[(String, TNode)]>,
    known: &[&str],
) -> Option<String> {
    let cx = Cx {
        known: known
            .iter()
            .flat_map(|t| t.lines())
            .map(str::trim)
            .filter(|l| l.starts_with('#'))
            .collect(),
    };
    let src = Src {
        t: right.as_table(),
        inline: false,
    };
    let root = &mut Tab::Table(doc.as_table_mut());
    patch(root, have, want, Some(src), base, &cx, true)?;
    let out = doc.to_string();
    let back = out.parse::<DocumentMut>().ok()?;
    maps_equal(&without_empty(&doc_map(&back)), &without_empty(want)).then_some(out)
}

/// Tables with no keys left out: a dotted-key table whose keys were all deleted is not
/// written at all (`c.d = 1` gone leaves no `c`), which is what a person would expect.
fn without_empty(m: &[(String, TNode)]) -> Map<Scalar> {
    m.iter()
        .filter_map(|(k, v)| match v {
            Node::Map(c) => {
                let c = without_empty(c);
                (!c.is_empty()).then(|| (k.clone(), Node::Map(c)))
            }
            _ => Some((k.clone(), v.clone())),
        })
        .collect()
}

struct Cx<'a> {
    /// Comment lines (trimmed) the result already has.
    known: HashSet<&'a str>,
}

/// In `toml_edit` the comments above a key belong to that key (those above a header to the
/// table), so an item copied from right brings them; the ones left already has would be
/// there twice (a file's header comment is the first key's).
fn drop_known_comments(key: &mut Key, item: &mut Item, cx: &Cx<'_>) {
    let strip = |d: &mut Decor| {
        let Some(p) = d.prefix().and_then(RawString::as_str) else {
            return;
        };
        let kept: String = p
            .split_inclusive('\n')
            .filter(|l| !cx.known.contains(l.trim()))
            .collect();
        if kept.len() != p.len() {
            d.set_prefix(kept);
        }
    };
    strip(key.leaf_decor_mut());
    match item {
        Item::Table(t) => strip(t.decor_mut()),
        Item::ArrayOfTables(a) => {
            if let Some(t) = a.get_mut(0) {
                strip(t.decor_mut());
            }
        }
        _ => {}
    }
}

/// A table being edited in place.
enum Tab<'a> {
    Table(&'a mut Table),
    Inline(&'a mut InlineTable),
}

/// A table items are copied from, and whether it is written inline.
#[derive(Clone, Copy)]
struct Src<'a> {
    t: &'a dyn TableLike,
    inline: bool,
}

fn src_of(i: &Item) -> Option<Src<'_>> {
    match i {
        Item::Table(t) => Some(Src { t, inline: false }),
        Item::Value(Value::InlineTable(t)) => Some(Src { t, inline: true }),
        _ => None,
    }
}

fn tab_of(i: &mut Item) -> Option<Tab<'_>> {
    match i {
        Item::Table(t) => Some(Tab::Table(t)),
        Item::Value(Value::InlineTable(t)) => Some(Tab::Inline(t)),
        _ => None,
    }
}

impl Tab<'_> {
    fn like(&self) -> &dyn TableLike {
        match self {
            Tab::Table(t) => &**t,
            Tab::Inline(t) => &**t,
        }
    }
    fn like_mut(&mut self) -> &mut dyn TableLike {
        match self {
            Tab::Table(t) => &mut **t,
            Tab::Inline(t) => &mut **t,
        }
    }
    fn inline(&self) -> bool {
        matches!(self, Tab::Inline(_))
    }
    fn slot(&mut self, k: &str) -> Option<&mut Item> {
        self.like_mut().get_key_value_mut(k).map(|(_, i)| i)
    }
    fn keys(&self) -> Vec<String> {
        self.like().iter().map(|(k, _)| k.to_owned()).collect()
    }
    /// `toml_edit` has no positional insert: take the tail off, insert, put the tail back
    /// (keys keep their formatting).
    fn insert_at(&mut self, at: usize, key: Key, item: Item) -> Option<()> {
        let tail: Vec<String> = self.keys().split_off(at.min(self.like().len()));
        match self {
            Tab::Table(t) => {
                let moved: Vec<_> = tail.iter().filter_map(|k| t.remove_entry(k)).collect();
                t.insert_formatted(&key, item);
                for (k, v) in moved {
                    t.insert_formatted(&k, v);
                }
            }
            Tab::Inline(t) => {
                let value = item.into_value().ok()?;
                let moved: Vec<_> = tail.iter().filter_map(|k| t.remove_entry(k)).collect();
                t.insert_formatted(&key, value);
                for (k, v) in moved {
                    t.insert_formatted(&k, v);
                }
            }
        }
        Some(())
    }
}

/// Removes what `want` lacks, recurses into tables changed on both sides, replaces changed
/// values with right's (keeping left's decoration: the comment after a value stays), and
/// inserts right's new keys after their predecessor in right (past keys only left added),
/// else before their successor, else at the end of the table (always the end at the top
/// level, where the first key carries the file's header comment).
fn patch(
    t: &mut Tab<'_>,
    have: &[(String, TNode)],
    want: &[(String, TNode)],
    right: Option<Src<'_>>,
    base: Option<&[(String, TNode)]>,
    cx: &Cx<'_>,
    root: bool,
) -> Option<()> {
    let end_space = match t {
        Tab::Inline(it) => last_suffix(it),
        Tab::Table(_) => None,
    };
    patch_entries(t, have, want, right, base, cx, root)?;
    if let (Tab::Inline(it), Some(end)) = (t, end_space) {
        tidy_inline(it, &end);
    }
    Some(())
}

/// The space before an inline table's `}`, which belongs to its last value.
fn last_suffix(t: &InlineTable) -> Option<String> {
    let (_, v) = t.iter().last()?;
    let s = v.decor().suffix()?.as_str()?;
    s.trim().is_empty().then(|| s.to_owned())
}

/// After entries moved in or out of an inline table, the space before `}` goes to the new
/// last value, and no other value keeps it (`{ a = 1 , b = 2 }` otherwise).
fn tidy_inline(t: &mut InlineTable, end: &str) {
    let n = t.len();
    for (i, (_, v)) in t.iter_mut().enumerate() {
        let space = v
            .decor()
            .suffix()
            .and_then(RawString::as_str)
            .is_none_or(|s| s.trim().is_empty());
        if space {
            v.decor_mut().set_suffix(if i + 1 == n { end } else { "" });
        }
    }
}

fn patch_entries(
    t: &mut Tab<'_>,
    have: &[(String, TNode)],
    want: &[(String, TNode)],
    right: Option<Src<'_>>,
    base: Option<&[(String, TNode)]>,
    cx: &Cx<'_>,
    root: bool,
) -> Option<()> {
    let (hi, wi) = (index(have), index(want));
    for (k, _) in have {
        if !wi.contains_key(k.as_str()) {
            t.like_mut().remove(k);
        }
    }
    for (k, w) in want {
        let Some(h) = hi.get(k.as_str()) else {
            continue;
        };
        if *h == w {
            continue;
        }
        let r_item = right.and_then(|r| r.t.get(k));
        let r_sub = r_item.and_then(src_of);
        if let (Node::Map(hm), Node::Map(wm)) = (*h, w) {
            let b_sub = base.and_then(|b| super::get(b, k)).and_then(super::as_map);
            if let Some(mut sub) = t.slot(k).and_then(tab_of) {
                patch(&mut sub, hm, wm, r_sub, b_sub, cx, false)?;
                continue;
            }
        }
        let inline = t.inline();
        let key_comments = t
            .like()
            .key(k)
            .and_then(|x| x.leaf_decor().prefix().cloned());
        let slot = t.slot(k)?;
        let mut new = adopt(Some(&*slot), r_item?.clone(), inline)?;
        if slot.is_value() == new.is_value() {
            *slot = new;
        } else {
            // A value became a table or the other way round: left's comments above it
            // move from the key to the header (or back), so that they stay written once.
            let comments = match &*slot {
                Item::Table(o) => o.decor().prefix().cloned(),
                Item::ArrayOfTables(o) => o.get(0).and_then(|o| o.decor().prefix().cloned()),
                _ => key_comments,
            };
            let mut key = right?.t.key(k)?.clone();
            key.fmt();
            if let Some(c) = comments {
                match &mut new {
                    Item::Table(n) => n.decor_mut().set_prefix(c),
                    Item::ArrayOfTables(n) => {
                        if let Some(n) = n.get_mut(0) {
                            n.decor_mut().set_prefix(c);
                        }
                    }
                    _ => key.leaf_decor_mut().set_prefix(c),
                }
            }
            let at = t.keys().iter().position(|x| x == k)?;
            t.like_mut().remove(k);
            t.insert_at(at, key, new)?;
        }
        fix_up(t.slot(k)?, w, r_sub, cx)?;
    }
    let Some(r) = right else {
        // Nothing to copy from: fine as long as nothing new was wanted.
        return want
            .iter()
            .all(|(k, _)| hi.contains_key(k.as_str()))
            .then_some(());
    };
    let r_keys: Vec<&str> = r.t.iter().map(|(k, _)| k).collect();
    let r_set: HashSet<&str> = r_keys.iter().copied().collect();
    let base_set: Option<HashSet<&str>> = base.map(|b| b.iter().map(|(k, _)| k.as_str()).collect());
    for (k, w) in want {
        if hi.contains_key(k.as_str()) {
            continue;
        }
        let (r_key, r_item) = r.t.get_key_value(k)?;
        let keys = t.keys();
        let pos = r_keys.iter().position(|rk| rk == k)?;
        let find = |names: &[&str], backwards: bool| {
            let found = |p: &&str| keys.iter().position(|x| x == p);
            if backwards {
                names.iter().rev().find_map(found)
            } else {
                names.iter().find_map(found)
            }
        };
        let at = match find(&r_keys[..pos], true) {
            Some(p) => {
                // Past the keys left added after the same predecessor: left's new lines
                // first, then right's.
                let left_added = |x: &String| {
                    !r_set.contains(x.as_str())
                        && !base_set.as_ref().is_some_and(|s| s.contains(x.as_str()))
                };
                p + 1 + keys[p + 1..].iter().take_while(|x| left_added(x)).count()
            }
            None if !root => find(&r_keys[pos + 1..], false).unwrap_or(keys.len()),
            None => keys.len(),
        };
        let mut key = r_key.clone();
        if r.inline != t.inline() {
            key.fmt();
        }
        let mut item = adopt(None, r_item.clone(), t.inline())?;
        if r.inline
            && !t.inline()
            && let Item::Value(v) = &mut item
        {
            v.decor_mut().clear();
        }
        drop_known_comments(&mut key, &mut item, cx);
        t.insert_at(at, key, item)?;
        fix_up(t.slot(k)?, w, r_item_src(r, k), cx)?;
    }
    Some(())
}

fn r_item_src<'a>(r: Src<'a>, k: &str) -> Option<Src<'a>> {
    r.t.get(k).and_then(src_of)
}

/// An item copied from right, made fit for its new place: a value inside an inline table,
/// left's decoration when it replaces left's item, table positions left to follow their
/// neighbours (or the replaced table's position).
fn adopt(old: Option<&Item>, mut new: Item, inline: bool) -> Option<Item> {
    if inline {
        let mut v = new.into_value().ok()?;
        if old.is_none() {
            v.decor_mut().clear();
        }
        new = Item::Value(v);
    }
    clear_positions(&mut new);
    match (old, &mut new) {
        (Some(Item::Value(o)), Item::Value(n)) => *n.decor_mut() = o.decor().clone(),
        (Some(Item::Table(o)), Item::Table(n)) => {
            *n.decor_mut() = o.decor().clone();
            n.set_position(o.position());
        }
        (Some(Item::ArrayOfTables(o)), Item::ArrayOfTables(n)) => {
            let first = o.iter().next().and_then(Table::position);
            if let Some(t) = n.get_mut(0) {
                t.set_position(first);
            }
        }
        _ => {}
    }
    Some(new)
}

/// Positions come from right's document, where they mean nothing: without one, a table is
/// written after the table before it in the document tree.
fn clear_positions(i: &mut Item) {
    match i {
        Item::Table(t) => {
            t.set_position(None);
            for (_, c) in t.iter_mut() {
                clear_positions(c);
            }
        }
        Item::ArrayOfTables(a) => {
            for t in a.iter_mut() {
                t.set_position(None);
                for (_, c) in t.iter_mut() {
                    clear_positions(c);
                }
            }
        }
        _ => {}
    }
}

/// After copying right's item: if the wanted value is not right's whole item (only when
/// applying some keys of a table), edit it down.
fn fix_up(slot: &mut Item, want: &TNode, right: Option<Src<'_>>, cx: &Cx<'_>) -> Option<()> {
    let now = item_node(slot)?;
    if now == *want {
        return Some(());
    }
    match (&now, want) {
        (Node::Map(nm), Node::Map(wm)) => patch(&mut tab_of(slot)?, nm, wm, right, None, cx, false),
        _ => None,
    }
}
