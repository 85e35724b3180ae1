//! A pass over a model's protobuf wire format before decoding: a singular message field given
//! twice is refused. Protobuf merges the two occurrences (onnxruntime and the onnx package do),
//! but the Rust decoder keeps only the last, so a model with two `graph` fields, two `type`s of
//! one value or two tensors in one attribute would mean one thing to onnxruntime and another
//! here; such a file is ambiguous, not a model to run. The same pass refuses a file whose last
//! field is cut short, which the decoder reads as a whole (shorter) message.

/// A message type of onnx.proto, by what its message-valued fields are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Msg {
    Model,
    Graph,
    Node,
    Attribute,
    Tensor,
    SparseTensor,
    ValueInfo,
    Type,
    TypeTensor,
    TypeSequence,
    TypeMap,
    TensorShape,
    TrainingInfo,
    Function,
    /// a message with no message-valued fields of interest (OperatorSetId, StringStringEntry, …)
    Leaf,
}

/// What field `no` of `m` holds: `Some((message type, repeated))` for a message field.
fn field(m: Msg, no: u64) -> Option<(Msg, bool)> {
    use Msg::*;
    Some(match (m, no) {
        (Model, 7) => (Graph, false),
        (Model, 20) => (TrainingInfo, true),
        (Model, 25) => (Function, true),
        (Model, 8 | 14 | 26) => (Leaf, true),
        (Graph, 1) => (Node, true),
        (Graph, 5) => (Tensor, true),
        (Graph, 15) => (SparseTensor, true),
        (Graph, 11..=13) => (ValueInfo, true),
        (Graph, 14 | 16) => (Leaf, true),
        (Node, 5) => (Attribute, true),
        (Node, 9 | 10) => (Leaf, true),
        (Attribute, 5) => (Tensor, false),
        (Attribute, 6) => (Graph, false),
        (Attribute, 22) => (SparseTensor, false),
        (Attribute, 14) => (Type, false),
        (Attribute, 10) => (Tensor, true),
        (Attribute, 11) => (Graph, true),
        (Attribute, 23) => (SparseTensor, true),
        (Attribute, 15) => (Type, true),
        (Tensor, 3) => (Leaf, false),
        (Tensor, 13 | 16) => (Leaf, true),
        (SparseTensor, 1 | 2) => (Tensor, false),
        (ValueInfo, 2) => (Type, false),
        (ValueInfo, 4) => (Leaf, true),
        (Type, 1 | 8) => (TypeTensor, false),
        (Type, 4 | 9) => (TypeSequence, false),
        (Type, 5) => (TypeMap, false),
        (TypeTensor, 2) => (TensorShape, false),
        (TypeSequence, 1) => (Type, false),
        (TypeMap, 2) => (Type, false),
        (TensorShape, 1) => (Leaf, true),
        (TrainingInfo, 1 | 2) => (Graph, false),
        (TrainingInfo, 3 | 4) => (Leaf, true),
        (Function, 11) => (Attribute, true),
        (Function, 7) => (Node, true),
        (Function, 12) => (ValueInfo, true),
        (Function, 9 | 14) => (Leaf, true),
        _ => return None,
    })
}

/// Protobuf's own nesting limit (deeper input fails to decode anyway).
const MAX_DEPTH: usize = 100;

fn varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = b.get(*at) else { return Err("truncated varint".into()) };
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// Refuses a singular message field given twice anywhere in a ModelProto, and wire data cut
/// short, which the decoder lets pass at the end of the file.
pub fn check_unambiguous(bytes: &[u8]) -> Result<(), String> {
    walk(bytes, Msg::Model, "ModelProto", 0)
}

fn walk(b: &[u8], m: Msg, path: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH || m == Msg::Leaf {
        return Ok(());
    }
    let mut seen: Vec<u64> = vec![];
    let mut attr = AttrFields::default();
    let mut at = 0;
    let corrupt = |at: usize, what: String| format!("{path} is corrupt at its byte {at}: {what}");
    while at < b.len() {
        let tag = varint(b, &mut at).map_err(|e| corrupt(at, e))?;
        let (no, wt) = (tag >> 3, tag & 7);
        let mut scalar = 0;
        let len = match wt {
            0 => varint(b, &mut at).map(|v| {
                scalar = v;
                0
            }),
            1 => Ok(8),
            5 => Ok(4),
            2 => varint(b, &mut at),
            // a group: no ONNX field is one, readers skip it as an unknown field
            3 => skip_group(b, &mut at, no, depth).map(|_| 0),
            _ => Err(format!("field {no} has wire type {wt}")),
        }
        .map_err(|e| corrupt(at, e))?;
        // the decoder reads a message cut short at the end of the file as if it were whole
        let Some(end) = usize::try_from(len).ok().and_then(|l| at.checked_add(l)).filter(|&e| e <= b.len()) else {
            return Err(corrupt(at, format!("field {no} claims {len} bytes, {} remain (truncated)", b.len() - at)));
        };
        if wt == 2 {
            if let Some((sub, repeated)) = field(m, no) {
                if !repeated {
                    if seen.contains(&no) {
                        return Err(format!(
                            "{path} gives its field {no} (a single {sub:?} message) twice: protobuf readers \
                             disagree on such a file (they merge the two or keep one)"
                        ));
                    }
                    seen.push(no);
                }
                walk(&b[at..end], sub, &format!("{path}.{no}"), depth + 1)?;
            }
        }
        if m == Msg::Attribute {
            attr.note(no, wt, scalar, &b[at..end]);
        }
        at = end;
    }
    if m == Msg::Attribute {
        attr.check().map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// What an AttributeProto holds on the wire: its declared type and the value fields present.
/// The ONNX checker (and onnxruntime) refuse a value field of another type than the declared one
/// and more than one value field; the decoder cannot tell a field set to its default from one
/// left out, so only the wire can say.
#[derive(Default)]
struct AttrFields {
    name: String,
    declared: Option<u64>,
    by_reference: bool,
    /// AttributeType codes of the value fields present, in wire order
    present: Vec<u64>,
}

impl AttrFields {
    fn note(&mut self, no: u64, wt: u64, scalar: u64, body: &[u8]) {
        let ty = match (no, wt) {
            (1, 2) => {
                self.name = String::from_utf8_lossy(body).into_owned();
                return;
            }
            (20, 0) => {
                self.declared = Some(scalar);
                return;
            }
            (21, 2) => {
                self.by_reference |= !body.is_empty();
                return;
            }
            (2, 5) => 1,
            (3, 0) => 2,
            (4, 2) => 3,
            (5, 2) => 4,
            (6, 2) => 5,
            (22, 2) => 11,
            (14, 2) => 13,
            (7, 5) => 6,
            (7, 2) | (8, 2) if body.is_empty() => return, // a packed list of no values
            (7, 2) => 6,
            (8, 0 | 2) => 7,
            (9, 2) => 8,
            (10, 2) => 9,
            (11, 2) => 10,
            (23, 2) => 12,
            (15, 2) => 14,
            _ => return,
        };
        if !self.present.contains(&ty) {
            self.present.push(ty);
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.by_reference {
            return Ok(());
        }
        if let Some(d) = self.declared {
            if let Some(t) = self.present.iter().find(|&&t| t != d) {
                return Err(format!(
                    "attribute '{}' declares type {d} but holds a value of type {t} (type and data field mismatch)",
                    self.name
                ));
            }
        }
        if self.present.len() > 1 {
            return Err(format!("attribute '{}' holds more than one value field", self.name));
        }
        Ok(())
    }
}

/// Skips a group's fields up to its end tag.
fn skip_group(b: &[u8], at: &mut usize, no: u64, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("groups nest too deep".into());
    }
    loop {
        let tag = varint(b, at)?;
        let (n, wt) = (tag >> 3, tag & 7);
        let skip = match wt {
            0 => varint(b, at).map(|_| 0)?,
            1 => 8,
            5 => 4,
            2 => varint(b, at)?,
            3 => skip_group(b, at, n, depth + 1).map(|_| 0)?,
            4 if n == no => return Ok(()),
            _ => return Err(format!("group {no} holds wire type {wt} of field {n}")),
        };
        *at = usize::try_from(skip)
            .ok()
            .and_then(|s| at.checked_add(s))
            .filter(|&e| e <= b.len())
            .ok_or("truncated group")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_bytes(no: u64, body: &[u8]) -> Vec<u8> {
        let mut v = vec![(no << 3 | 2) as u8, body.len() as u8];
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn a_second_graph_or_nested_type_is_refused() {
        let graph = field_bytes(2, b"g"); // GraphProto { name: "g" }
        let one = field_bytes(7, &graph);
        assert!(check_unambiguous(&one).is_ok());
        let two = [one.clone(), one.clone()].concat();
        let e = check_unambiguous(&two).unwrap_err();
        assert!(e.contains("ModelProto gives its field 7 (a single Graph message) twice"), "{e}");
        // ValueInfoProto.type twice, inside a graph input: repeated inputs are fine, the type is not
        let ty = field_bytes(2, &field_bytes(1, &[8, 1]));
        let input = field_bytes(11, &[field_bytes(1, b"x"), ty.clone(), ty].concat());
        let e = check_unambiguous(&field_bytes(7, &[input.clone(), input].concat())).unwrap_err();
        assert!(e.contains("ModelProto.7.11 gives its field 2"), "{e}");
        // the graph's length says 3 bytes, 1 follows
        let e = check_unambiguous(&one[..one.len() - 2]).unwrap_err();
        assert!(e.contains("field 7 claims 3 bytes, 1 remain (truncated)"), "{e}");
        // a group (field 14, wire type 3) holding a varint field is skipped whole; one never
        // closed is truncated
        // an INT attribute (type 2 = field 20) whose `s` (field 4) is present, empty as it is
        let node = |attr: &[u8]| field_bytes(7, &field_bytes(1, &field_bytes(5, attr)));
        let seed = [field_bytes(1, b"seed"), vec![20 << 3 & 0x7f | 0x80, 1, 2], field_bytes(4, b"")].concat();
        let e = check_unambiguous(&node(&seed)).unwrap_err();
        assert!(e.contains("attribute 'seed' declares type 2 but holds a value of type 3"), "{e}");
        let ok = [field_bytes(1, b"seed"), vec![20 << 3 & 0x7f | 0x80, 1, 2], vec![3 << 3, 7]].concat();
        assert!(check_unambiguous(&node(&ok)).is_ok());
        let group = [(14 << 3 | 3) as u8, 8, 1, (14 << 3 | 4) as u8];
        assert!(check_unambiguous(&[&group[..], &one[..]].concat()).is_ok());
        let e = check_unambiguous(&group[..3]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }
}
