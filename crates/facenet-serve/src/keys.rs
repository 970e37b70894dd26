//! `facenet keys`: create, list and revoke the service's API keys.

use facenet_gallery::tenants::create_key;
use facenet_gallery::{Result, Role, Tenants};

/// A key command.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Subcommand))]
pub enum KeysCmd {
    /// Create a key for a gallery (created if new); the key is printed once, only its hash is
    /// kept.
    Create {
        /// The gallery the key opens (a name inside the store).
        #[cfg_attr(feature = "clap", arg(long, default_value = facenet_gallery::DEFAULT_GALLERY))]
        gallery: String,
        /// `read`: detect, embed, verify, identify, list; `write`: also enrol, rename, delete.
        #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "read"))]
        role: Role,
        /// A note: who holds the key, what for.
        #[cfg_attr(feature = "clap", arg(long, default_value = ""))]
        label: String,
    },
    /// List the keys (ids, galleries, roles; never the keys themselves).
    List,
    /// Revoke a key by its id (see `list`).
    Revoke {
        /// The key's id.
        id: String,
    },
}

/// Runs a key command; returns what to print.
pub fn run(cmd: KeysCmd, store: &dyn Tenants) -> Result<String> {
    Ok(match cmd {
        KeysCmd::Create {
            gallery,
            role,
            label,
        } => {
            let (key, secret) = create_key(store, &gallery, role, &label)?;
            format!(
                "{secret}\n\nkey {} ({}) for gallery `{}` of {}; shown once: keep it now, \
                 send it as the x-api-key header\n",
                key.id,
                key.role.as_str(),
                key.gallery,
                store.location()
            )
        }
        KeysCmd::List => {
            let keys = store.keys()?;
            let mut out = format!(
                "{:<14} {:<20} {:<6} {:<12} label\n",
                "id", "gallery", "role", "created"
            );
            for k in &keys {
                out.push_str(&format!(
                    "{:<14} {:<20} {:<6} {:<12} {}\n",
                    k.id,
                    k.gallery,
                    k.role.as_str(),
                    k.created,
                    k.label
                ));
            }
            out.push_str(&format!("{} key(s) in {}\n", keys.len(), store.location()));
            out
        }
        KeysCmd::Revoke { id } => {
            if store.revoke_key(&id)? {
                format!("revoked key {id}\n")
            } else {
                return Err(facenet_gallery::GalleryError::Invalid(format!(
                    "no key with id `{id}` in {} (see `facenet keys list`)",
                    store.location()
                )));
            }
        }
    })
}
