//! Conversion between payloads (JSON) and readable BSON, and between stored documents and the
//! persistence types.
//!
//! This module owns the document shapes of the `EventJournal` and `SnapshotStore` collections.
//! Payloads become ordinary BSON values (objects become sub-documents, integers `Int64`, other
//! numbers `Double`) so an operator can read and query them with any MongoDB client.

use mongodb::bson::{Bson, DateTime, Document, doc};
use persistence::{
    Payload, PersistenceError, PersistentRepr, Result, SelectedSnapshot, SnapshotData,
    SnapshotMetadata,
};
use serde_json::{Map, Number, Value};

/// A JSON value as BSON. Integers above `i64::MAX` have no BSON integer type and are refused.
pub fn json_to_bson(v: &Value) -> Result<Bson> {
    Ok(match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Bson::Int64(i)
            } else if n.is_u64() {
                return Err(PersistenceError::Serialization(format!(
                    "integer {n} does not fit a BSON 64-bit integer"
                )));
            } else {
                Bson::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(a) => Bson::Array(a.iter().map(json_to_bson).collect::<Result<_>>()?),
        Value::Object(o) => {
            let mut d = Document::new();
            for (k, v) in o {
                d.insert(k.clone(), json_to_bson(v)?);
            }
            Bson::Document(d)
        }
    })
}

/// A BSON value as JSON; BSON types without a JSON counterpart are reported as corrupt.
pub fn bson_to_json(b: &Bson) -> Result<Value> {
    Ok(match b {
        Bson::Null => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Int32(i) => Value::Number((*i).into()),
        Bson::Int64(i) => Value::Number((*i).into()),
        Bson::Double(f) => Value::Number(Number::from_f64(*f).ok_or_else(|| {
            PersistenceError::Corrupt(format!("stored number {f} has no JSON form"))
        })?),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(a) => Value::Array(a.iter().map(bson_to_json).collect::<Result<_>>()?),
        Bson::Document(d) => {
            let mut m = Map::new();
            for (k, v) in d {
                m.insert(k.clone(), bson_to_json(v)?);
            }
            Value::Object(m)
        }
        other => {
            return Err(PersistenceError::Corrupt(format!(
                "stored payload holds a {:?} value, which is not JSON data",
                other.element_type()
            )));
        }
    })
}

/// A payload as BSON.
pub fn payload_to_bson(p: &Payload) -> Result<Bson> {
    json_to_bson(&p.to_value()?)
}

/// BSON as a payload.
pub fn bson_to_payload(b: &Bson) -> Result<Payload> {
    Ok(Payload::from_value(&bson_to_json(b)?))
}

fn corrupt(field: &str, e: impl std::fmt::Display) -> PersistenceError {
    PersistenceError::Corrupt(format!("stored document field '{field}': {e}"))
}

fn get_i64(d: &Document, field: &str) -> Result<i64> {
    match d.get(field) {
        Some(Bson::Int64(i)) => Ok(*i),
        Some(Bson::Int32(i)) => Ok(i64::from(*i)),
        Some(other) => Err(corrupt(
            field,
            format!("expected an integer, found {other}"),
        )),
        None => Err(corrupt(field, "missing")),
    }
}

fn get_str(d: &Document, field: &str) -> Result<String> {
    d.get_str(field)
        .map(str::to_owned)
        .map_err(|e| corrupt(field, e))
}

fn get_millis(d: &Document, field: &str) -> Result<i64> {
    d.get_datetime(field)
        .map(|t| t.timestamp_millis())
        .map_err(|e| corrupt(field, e))
}

/// The `EventJournal` document of an event with its tag ordering.
pub fn event_to_doc(e: &PersistentRepr, ordering: i64) -> Result<Document> {
    Ok(doc! {
        "persistenceId": &e.persistence_id,
        "sequenceNr": e.sequence_nr as i64,
        "ordering": ordering,
        "manifest": &e.manifest,
        "schemaVersion": i64::from(e.schema_version),
        "tags": e.tags.clone(),
        "timestamp": DateTime::from_millis(e.timestamp),
        "writerUuid": &e.writer_uuid,
        "payload": payload_to_bson(&e.payload)?,
    })
}

/// An event and its ordering from an `EventJournal` document.
pub fn doc_to_event(d: &Document) -> Result<(i64, PersistentRepr)> {
    let tags = match d.get("tags") {
        Some(Bson::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| corrupt("tags", "not a string"))
            })
            .collect::<Result<Vec<_>>>()?,
        Some(other) => return Err(corrupt("tags", format!("expected an array, found {other}"))),
        None => Vec::new(),
    };
    let seq = get_i64(d, "sequenceNr")?;
    let version = get_i64(d, "schemaVersion")?;
    Ok((
        get_i64(d, "ordering")?,
        PersistentRepr {
            persistence_id: get_str(d, "persistenceId")?,
            sequence_nr: u64::try_from(seq).map_err(|e| corrupt("sequenceNr", e))?,
            manifest: get_str(d, "manifest")?,
            schema_version: u32::try_from(version).map_err(|e| corrupt("schemaVersion", e))?,
            tags,
            payload: bson_to_payload(
                d.get("payload")
                    .ok_or_else(|| corrupt("payload", "missing"))?,
            )?,
            timestamp: get_millis(d, "timestamp")?,
            writer_uuid: get_str(d, "writerUuid")?,
        },
    ))
}

/// The `SnapshotStore` document of a snapshot.
pub fn snapshot_to_doc(m: &SnapshotMetadata, s: &SnapshotData) -> Result<Document> {
    Ok(doc! {
        "persistenceId": &m.persistence_id,
        "sequenceNr": m.sequence_nr as i64,
        "timestamp": DateTime::from_millis(m.timestamp),
        "manifest": &s.manifest,
        "schemaVersion": i64::from(s.schema_version),
        "snapshot": payload_to_bson(&s.payload)?,
    })
}

/// A snapshot from a `SnapshotStore` document.
pub fn doc_to_snapshot(d: &Document) -> Result<SelectedSnapshot> {
    let seq = get_i64(d, "sequenceNr")?;
    let version = get_i64(d, "schemaVersion")?;
    Ok(SelectedSnapshot {
        metadata: SnapshotMetadata {
            persistence_id: get_str(d, "persistenceId")?,
            sequence_nr: u64::try_from(seq).map_err(|e| corrupt("sequenceNr", e))?,
            timestamp: get_millis(d, "timestamp")?,
        },
        data: SnapshotData {
            manifest: get_str(d, "manifest")?,
            schema_version: u32::try_from(version).map_err(|e| corrupt("schemaVersion", e))?,
            payload: bson_to_payload(
                d.get("snapshot")
                    .ok_or_else(|| corrupt("snapshot", "missing"))?,
            )?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_bson() {
        let v = json!({"a": 1, "b": [true, null, -2.5, "x"], "c": {"d": i64::MIN}, "e": 1.0});
        let b = json_to_bson(&v).unwrap();
        let d = b.as_document().unwrap();
        assert_eq!(d.get("a"), Some(&Bson::Int64(1)));
        assert_eq!(bson_to_json(&b).unwrap(), v);
    }

    #[test]
    fn too_large_integer_is_refused() {
        let err = json_to_bson(&json!({"n": u64::MAX})).unwrap_err();
        assert!(matches!(err, PersistenceError::Serialization(_)), "{err}");
    }

    #[test]
    fn non_json_bson_is_reported_as_corrupt() {
        let err = bson_to_json(&Bson::ObjectId(mongodb::bson::oid::ObjectId::new())).unwrap_err();
        assert!(matches!(err, PersistenceError::Corrupt(_)), "{err}");
    }

    #[test]
    fn event_document_is_readable_and_round_trips() {
        let e = PersistentRepr {
            persistence_id: "book-1".into(),
            sequence_nr: 7,
            manifest: "Filled".into(),
            schema_version: 2,
            tags: vec!["t1".into()],
            payload: Payload::from_value(&json!({"price": 101.5, "quantity": 3})),
            timestamp: 1234,
            writer_uuid: "w".into(),
        };
        let d = event_to_doc(&e, 42).unwrap();
        assert_eq!(
            d.get_document("payload")
                .unwrap()
                .get_i64("quantity")
                .unwrap(),
            3
        );
        let (ord, back) = doc_to_event(&d).unwrap();
        assert_eq!(ord, 42);
        assert_eq!(
            back,
            PersistentRepr {
                payload: back.payload.clone(),
                ..e.clone()
            }
        );
        assert_eq!(
            back.payload.to_value().unwrap(),
            e.payload.to_value().unwrap()
        );
        let mut broken = d.clone();
        broken.insert("sequenceNr", "seven");
        assert!(matches!(
            doc_to_event(&broken),
            Err(PersistenceError::Corrupt(_))
        ));
    }
}
