//! A call's arguments as they travel to another process, the same for a task, an actor
//! call and an actor's constructor: a value or a small object inline, a large one by
//! reference to where it is kept (this process's object server, or wherever its
//! placeholder says), so that the receiver pulls it once and keeps it for its node.

use std::sync::Arc;

use crate::error::Result;
use crate::object::pin::{self, Pin};
use crate::object::{Codec, Encoded, Held, Store};
use crate::task::{Arg, ArgKind, EncodedArg};
use crate::wire::INLINE_MAX;

use super::objects::Objects;

/// Arguments as they travel, and what must stay alive while the receiver may still
/// read them: the objects referred to, the large values put aside for it, and what the
/// encoding pinned (actor handles inside values).
pub(crate) struct TravellingArgs {
    pub args: Vec<EncodedArg>,
    pub keep: Vec<Pin>,
}

/// Encodes `args` for another process; `next_id` names a large value put aside in
/// this process's store for the receiver to pull.
pub(crate) fn encode(
    store: &Arc<Store>,
    objects: &Objects,
    args: &[Arg],
    mut next_id: impl FnMut() -> crate::id::ObjectId,
) -> Result<TravellingArgs> {
    let mut out = TravellingArgs {
        args: Vec::with_capacity(args.len()),
        keep: Vec::new(),
    };
    for arg in args {
        let encoded = match &arg.0 {
            ArgKind::Value(v, codec) => {
                let (bytes, pins) = pin::collect(|| (codec.encode)(v));
                out.keep.extend(pins);
                let bytes = bytes?;
                if bytes.len() <= INLINE_MAX {
                    EncodedArg::Inline(bytes)
                } else {
                    // Too large to travel with the call: kept here, pulled by the receiver.
                    let id = next_id();
                    let size = bytes.len() as u64;
                    let count = store.hold(id, Arc::new(Encoded(bytes)), size, Codec::encoded());
                    store.mark_exported(id);
                    out.keep.push(Arc::new(count));
                    EncodedArg::Ref {
                        id,
                        at: objects.address().to_string(),
                    }
                }
            }
            ArgKind::Ref(count) => {
                let id = count.id;
                let store = count.store()?;
                out.keep.push(count.clone());
                match store.poll(id, None) {
                    Some(Ok(Held::Elsewhere(at))) => EncodedArg::Ref { id, at: at.at },
                    Some(Ok(Held::Here(_))) => {
                        // Decided by the size the store accounts, so that a large object
                        // is not encoded here only to be encoded again when pulled.
                        let size = store.size(id).unwrap_or(0);
                        if size <= INLINE_MAX as u64 {
                            let (bytes, pins) = pin::collect(|| store.encoded(id));
                            out.keep.extend(pins);
                            EncodedArg::Inline(bytes?)
                        } else {
                            store.mark_exported(id);
                            EncodedArg::Ref {
                                id,
                                at: objects.address().to_string(),
                            }
                        }
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err(crate::error::Error::ObjectLost(id)),
                }
            }
        };
        out.args.push(encoded);
    }
    Ok(out)
}
