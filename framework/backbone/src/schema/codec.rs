//! Cached Avro codecs: an [`Encoder`] per event type and schema id; decoders per (writer schema id,
//! reader type), built once. Per message there is no registry call and no schema parse.

use std::any::TypeId;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, PoisonError, RwLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;

use super::{AvroEvent, SchemaError, SchemaId, wire};

/// Encodes `T` in the wire format under one schema id.
pub struct Encoder<T> {
    id: SchemaId,
    writer: GenericDatumWriter<'static>,
    _type: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for Encoder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("id", &self.id).field("type", &std::any::type_name::<T>()).finish()
    }
}

impl<T: AvroEvent> Encoder<T> {
    /// An encoder writing `T`'s schema, registered as `id`.
    pub fn new(id: SchemaId) -> Result<Self, SchemaError> {
        let writer = GenericDatumWriter::builder(T::schema())
            .build()
            .map_err(|e| SchemaError::InvalidSchema { reason: e.to_string() })?;
        Ok(Self { id, writer, _type: PhantomData })
    }

    /// The schema id it writes.
    pub fn id(&self) -> SchemaId {
        self.id
    }

    /// `value`, framed: magic byte, schema id, Avro body.
    pub fn encode(&self, value: &T) -> Result<Vec<u8>, SchemaError> {
        let mut out = Vec::with_capacity(128);
        self.encode_into(value, &mut out)?;
        Ok(out)
    }

    /// Appends `value`, framed, to `out`.
    pub fn encode_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SchemaError> {
        wire::write_header(out, self.id);
        self.writer.write_ser(out, value).map_err(|e| SchemaError::Encode {
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        })?;
        Ok(())
    }
}

/// How data written with one schema becomes a `T`.
enum Plan {
    /// The writer's schema is the reader's: schema-aware deserialization straight into `T` (which
    /// needs the type's serde name to be the record's name; if it is not, the plan falls back to
    /// resolution for good).
    Same(GenericDatumReader<'static>, std::sync::atomic::AtomicBool),
    /// Different schemas: Avro schema resolution (defaults for added fields, dropped removed ones).
    Resolve(GenericDatumReader<'static>),
}

/// Decoders by (reader type, writer schema id), built on first use.
#[derive(Default)]
pub(crate) struct Decoders {
    plans: RwLock<HashMap<(TypeId, SchemaId), Arc<Plan>>>,
}

impl Decoders {
    /// Decodes `body`, written with `writer` (schema `id`), as a `T`.
    pub(crate) fn decode<T: AvroEvent>(
        &self,
        id: SchemaId,
        writer: &'static Schema,
        body: &[u8],
    ) -> Result<T, SchemaError> {
        let key = (TypeId::of::<T>(), id);
        let found = self.plans.read().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
        let plan = match found {
            Some(plan) => plan,
            None => {
                let plan = Arc::new(Self::plan::<T>(writer)?);
                self.plans.write().unwrap_or_else(PoisonError::into_inner).entry(key).or_insert(plan).clone()
            }
        };
        let undecodable = |e: apache_avro::Error| SchemaError::Decode {
            id,
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        };
        let mut body = body;
        match &*plan {
            Plan::Same(reader, by_value) => {
                use std::sync::atomic::Ordering::Relaxed;
                if !by_value.load(Relaxed) {
                    let mut fast = body;
                    match reader.read_deser(&mut fast) {
                        Ok(value) => return Ok(value),
                        // The serde-name check of the schema-aware path: use values from now on.
                        Err(e) if e.to_string().contains("Expected Schema::Record") => {
                            tracing::warn!(
                                r#type = std::any::type_name::<T>(),
                                "the type's serde name is not its Avro record's name: decoding by value from \
                                 now on (several times slower); rename it with #[serde(rename = \"…\")]"
                            );
                            by_value.store(true, Relaxed);
                        }
                        Err(e) => return Err(undecodable(e)),
                    }
                }
                let value = reader.read_value(&mut body).map_err(undecodable)?;
                apache_avro::from_value(&value).map_err(undecodable)
            }
            Plan::Resolve(reader) => {
                let value = reader.read_value(&mut body).map_err(undecodable)?;
                apache_avro::from_value(&value).map_err(undecodable)
            }
        }
    }

    fn plan<T: AvroEvent>(writer: &'static Schema) -> Result<Plan, SchemaError> {
        let reader = T::schema();
        let invalid = |e: apache_avro::Error| SchemaError::InvalidSchema { reason: e.to_string() };
        if writer.canonical_form() == reader.canonical_form() {
            Ok(Plan::Same(GenericDatumReader::builder(reader).build().map_err(invalid)?, Default::default()))
        } else {
            Ok(Plan::Resolve(
                GenericDatumReader::builder(writer).reader_schema(reader).build().map_err(invalid)?,
            ))
        }
    }
}
