//! The attributes of prism: `#[prism::remote]` on a function and `#[prism::actor]` on a
//! struct and its impl. Use them through the `prism` crate, which re-exports them.
//!
//! Both leave the user's item as written (a remote function stays callable as a plain
//! function) and add the remote interface beside it:
//!
//! * for `fn f`, a type `f` in the type namespace (functions live in the value
//!   namespace, so both coexist) with `f::remote(..)`, `f::options()` and `f::NAME`, and a
//!   registry entry under the stable name `module_path::f`;
//! * for `struct T`, a handle type `THandle` and `impl prism::Actor for T`;
//! * for `impl T`, `T::remote(..)` and `T::options()` from the constructor `fn new`, and
//!   one method on `THandle` per `&self`/`&mut self` method.
//!
//! Each parameter accepts a value, an `Arc`, or an `ObjectRef` of its type. A parameter
//! declared as a reference (`&T`, `&[T]`, `&str`) is handed the shared stored value
//! (`T`, `Vec<T>`, `String`) without a copy.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    parse_macro_input, Error, Expr, FnArg, Ident, ImplItem, ImplItemFn, Item, ItemFn, ItemImpl,
    ItemStruct, Lit, MetaNameValue, Pat, ReturnType, Signature, Token, Type, Visibility,
};

/// Makes a function callable as a task: `f::remote(args..)` returns an `ObjectRef` at
/// once. Defaults for the options may be set in the attribute: `num_cpus`, `num_gpus`,
/// `memory`, `max_retries`, `retry_on_panic`, `name`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let defaults =
        parse_macro_input!(attr with Punctuated::<MetaNameValue, Token![,]>::parse_terminated);
    let func = parse_macro_input!(item as ItemFn);
    remote_fn(defaults, func)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// Makes a struct (and then its impl) an actor: `T::remote(args..)` starts one and
/// returns a `THandle` whose methods return `ObjectRef`s.
///
/// On the struct it accepts no arguments. The impl must have a constructor `fn new(..) ->
/// Self`; every method taking `&self` or `&mut self` (without generic parameters) becomes
/// a handle method of the same visibility.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr: Tokens = attr.into();
    let parsed = parse_macro_input!(item as Item);
    let out = match parsed {
        Item::Struct(s) if attr.is_empty() => actor_struct(s),
        Item::Impl(i) if attr.is_empty() => actor_impl(i),
        Item::Struct(_) | Item::Impl(_) => Err(Error::new(
            attr.span(),
            "#[prism::actor] takes no arguments; set options with T::options()",
        )),
        other => Err(Error::new(
            other.span(),
            "#[prism::actor] goes on a struct and on its impl block",
        )),
    };
    out.unwrap_or_else(Error::into_compile_error).into()
}

/// How a parameter reaches the function.
struct Param {
    /// The name used in the generated code.
    name: Ident,
    /// The type kept in the store (`Vec<T>` for `&[T]`, `String` for `&str`, `T` for `&T`).
    stored: Type,
    /// Declared as a reference: gets the shared value.
    by_ref: bool,
}

fn params(sig: &Signature) -> syn::Result<Vec<Param>> {
    if !sig.generics.params.is_empty() {
        return Err(Error::new(
            sig.generics.span(),
            "remote functions and actor methods cannot be generic: the registry needs one \
             concrete entry point per name",
        ));
    }
    let mut out = Vec::new();
    for (i, arg) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pt) = arg else { continue };
        let name = match &*pt.pat {
            Pat::Ident(p) => p.ident.clone(),
            _ => format_ident!("__prism_arg{}", i),
        };
        let (stored, by_ref) = stored_type(&pt.ty)?;
        out.push(Param {
            name,
            stored,
            by_ref,
        });
    }
    Ok(out)
}

fn stored_type(ty: &Type) -> syn::Result<(Type, bool)> {
    match ty {
        Type::Reference(r) => {
            if r.mutability.is_some() {
                return Err(Error::new(
                    ty.span(),
                    "a remote parameter cannot be `&mut`: arguments are shared; take it by value",
                ));
            }
            let stored: Type = match &*r.elem {
                Type::Slice(s) => {
                    let elem = &s.elem;
                    syn::parse_quote!(::std::vec::Vec<#elem>)
                }
                Type::Path(p) if p.path.is_ident("str") => syn::parse_quote!(::std::string::String),
                other => other.clone(),
            };
            Ok((stored, true))
        }
        Type::ImplTrait(_) => Err(Error::new(
            ty.span(),
            "a remote parameter needs a concrete type, not `impl Trait`",
        )),
        other => Ok((other.clone(), false)),
    }
}

fn return_type(sig: &Signature) -> Type {
    match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    }
}

/// Statements binding each parameter from `__args` (a `LocalArgs`), and the expressions
/// passing them to the function.
fn local_bindings(ps: &[Param]) -> (Vec<Tokens>, Vec<Tokens>) {
    let mut binds = Vec::new();
    let mut uses = Vec::new();
    for (i, p) in ps.iter().enumerate() {
        let (name, stored) = (&p.name, &p.stored);
        if p.by_ref {
            binds.push(quote!(let #name = __args.shared::<#stored>(#i);));
            uses.push(quote!(&*#name));
        } else {
            binds.push(quote!(let #name = __args.owned::<#stored>(#i);));
            uses.push(quote!(#name));
        }
    }
    (binds, uses)
}

/// The registry's description of each parameter: its stored type, and whether the
/// function only reads it (declared as a reference).
fn param_entries(ps: &[Param]) -> Tokens {
    let entries = ps.iter().map(|p| {
        let stored = &p.stored;
        if p.by_ref {
            quote!(::prism::task::Param::shared::<#stored>())
        } else {
            quote!(::prism::task::Param::of::<#stored>())
        }
    });
    quote!(&[#(#entries),*])
}

/// The typed parameters of a generated `remote` method and the `Arg`s they make.
fn remote_params(ps: &[Param]) -> (Vec<Tokens>, Tokens) {
    let decls = ps
        .iter()
        .map(|p| {
            let (name, stored) = (&p.name, &p.stored);
            quote!(#name: impl ::prism::IntoArg<#stored>)
        })
        .collect();
    let args = ps.iter().map(|p| {
        let (name, stored) = (&p.name, &p.stored);
        quote!(::prism::IntoArg::<#stored>::into_arg(#name))
    });
    (decls, quote!(::std::vec![#(#args),*]))
}

/// The visibility of generated items: the item's own, or `pub(super)`-like reach for
/// private items so that the enclosing module can use them.
fn reach(vis: &Visibility) -> Tokens {
    match vis {
        Visibility::Inherited => quote!(pub(crate)),
        v => quote!(#v),
    }
}

fn option_defaults(defaults: Punctuated<MetaNameValue, Token![,]>) -> syn::Result<Tokens> {
    let mut out = Tokens::new();
    for nv in defaults {
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let v = &nv.value;
        let call = match key.as_str() {
            "num_cpus" => quote!(.num_cpus((#v) as f64)),
            "num_gpus" => quote!(.num_gpus((#v) as f64)),
            "memory" => quote!(.memory((#v) as u64)),
            "max_retries" => quote!(.max_retries((#v) as u32)),
            "retry_on_panic" => quote!(.retry_on_panic(#v)),
            "name" => match v {
                Expr::Lit(l) if matches!(l.lit, Lit::Str(_)) => quote!(.name(#v)),
                _ => return Err(Error::new(v.span(), "`name` takes a string literal")),
            },
            _ => {
                return Err(Error::new(
                    nv.path.span(),
                    "unknown option: expected num_cpus, num_gpus, memory, max_retries, \
                     retry_on_panic or name",
                ))
            }
        };
        out.extend(call);
    }
    Ok(out)
}

fn remote_fn(defaults: Punctuated<MetaNameValue, Token![,]>, func: ItemFn) -> syn::Result<Tokens> {
    let defaults = option_defaults(defaults)?;
    let sig = &func.sig;
    let name = &sig.ident;
    let ps = params(sig)?;
    if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
        return Err(Error::new(
            r.span(),
            "#[prism::remote] is for free functions; use #[prism::actor] for methods",
        ));
    }
    let ret = return_type(sig);
    let vis = reach(&func.vis);
    let options_ty = format_ident!("__prism_options_{}", name);
    let entry = format_ident!("__PRISM_FN_{}", name);
    let (binds, uses) = local_bindings(&ps);
    let (decls, args) = remote_params(&ps);
    let names: Vec<&Ident> = ps.iter().map(|p| &p.name).collect();
    let param_list = param_entries(&ps);
    let local_call = if sig.asyncness.is_some() {
        quote!(::prism::__private::block_on(#name(#(#uses),*)))
    } else {
        quote!(#name(#(#uses),*))
    };
    let doc = format!(
        "The remote interface of [`{name}`](fn@{name}): `{name}::remote(..)` runs it as a \
         task and returns an `ObjectRef`; `{name}::options()` sets resources and retries."
    );
    Ok(quote! {
        #func

        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #vis struct #name {
            _private: (),
        }

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #options_ty {
            options: ::prism::TaskOptions,
        }

        impl #name {
            /// The function's stable name in the registry.
            #vis const NAME: &'static str = ::std::concat!(::std::module_path!(), "::", ::std::stringify!(#name));

            /// Runs the function as a task; returns a reference to its result at once.
            #[allow(clippy::too_many_arguments)]
            #vis fn remote(#(#decls),*) -> ::prism::ObjectRef<#ret> {
                Self::options().remote(#(#names),*)
            }

            /// Options for one call: `.num_cpus(..)`, `.max_retries(..)`, ... then `.remote(..)`.
            #vis fn options() -> #options_ty {
                #options_ty {
                    options: ::prism::TaskOptions::default() #defaults,
                }
            }

            #[allow(unused_mut)]
            fn __run_local(mut __args: ::prism::task::LocalArgs) -> ::prism::task::Output {
                #(#binds)*
                ::prism::task::Output::new(#local_call)
            }

        }

        #[allow(non_upper_case_globals)]
        static #entry: ::prism::task::RemoteFunction = ::prism::task::RemoteFunction {
            name: #name::NAME,
            run_local: #name::__run_local,
            params: #param_list,
        };

        ::prism::__private::inventory::submit! {
            ::prism::task::Registration(&#entry)
        }

        impl #options_ty {
            ::prism::__option_methods!();

            /// Runs the function as a task with these options.
            #[allow(clippy::too_many_arguments)]
            #vis fn remote(self, #(#decls),*) -> ::prism::ObjectRef<#ret> {
                ::prism::__private::submit::<#ret>(&#entry, #args, self.options)
            }
        }
    })
}

fn actor_struct(s: ItemStruct) -> syn::Result<Tokens> {
    if !s.generics.params.is_empty() {
        return Err(Error::new(
            s.generics.span(),
            "an actor type cannot be generic: the registry needs one concrete type per name",
        ));
    }
    let name = &s.ident;
    let vis = &s.vis;
    let handle = format_ident!("{}Handle", name);
    let doc = format!(
        "A handle on a [`{name}`] actor: one method per actor method, each returning an \
         `ObjectRef`. Dereferences to `prism::ActorHandle<{name}>`."
    );
    Ok(quote! {
        #s

        #[doc = #doc]
        #vis struct #handle(::prism::ActorHandle<#name>);

        impl ::std::clone::Clone for #handle {
            fn clone(&self) -> Self {
                #handle(self.0.clone())
            }
        }

        impl ::std::fmt::Debug for #handle {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl ::std::ops::Deref for #handle {
            type Target = ::prism::ActorHandle<#name>;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl ::std::convert::From<::prism::ActorHandle<#name>> for #handle {
            fn from(h: ::prism::ActorHandle<#name>) -> Self {
                #handle(h)
            }
        }

        impl ::prism::__private::serde::Serialize for #handle {
            fn serialize<S: ::prism::__private::serde::Serializer>(
                &self,
                s: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                ::prism::__private::serde::Serialize::serialize(&self.0, s)
            }
        }

        impl<'de> ::prism::__private::serde::Deserialize<'de> for #handle {
            fn deserialize<D: ::prism::__private::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                ::prism::__private::serde::Deserialize::deserialize(d).map(#handle)
            }
        }

        impl ::prism::Actor for #name {
            type Handle = #handle;
            const CLASS: &'static str =
                ::std::concat!(::std::module_path!(), "::", ::std::stringify!(#name));
        }
    })
}

fn actor_impl(imp: ItemImpl) -> syn::Result<Tokens> {
    if imp.trait_.is_some() {
        return Err(Error::new(
            imp.span(),
            "#[prism::actor] goes on the type's own impl block, not a trait impl",
        ));
    }
    let Type::Path(tp) = &*imp.self_ty else {
        return Err(Error::new(
            imp.self_ty.span(),
            "expected the actor's type name",
        ));
    };
    let Some(ty) = tp.path.get_ident().cloned() else {
        return Err(Error::new(tp.span(), "expected the actor's type name"));
    };
    let handle = format_ident!("{}Handle", ty);
    let options_ty = format_ident!("__prism_actor_options_{}", ty);
    let methods: Vec<&ImplItemFn> = imp
        .items
        .iter()
        .filter_map(|i| match i {
            ImplItem::Fn(f) => Some(f),
            _ => None,
        })
        .collect();
    let ctor = methods
        .iter()
        .find(|m| m.sig.ident == "new" && m.sig.receiver().is_none())
        .ok_or_else(|| {
            Error::new(
                Span::call_site(),
                format!("#[prism::actor] impl {ty} needs a constructor `fn new(..) -> Self`"),
            )
        })?;
    let ctor_vis = reach(&ctor.vis);
    let ctor_ps = params(&ctor.sig)?;
    let (ctor_binds, ctor_uses) = local_bindings(&ctor_ps);
    let (ctor_decls, ctor_args) = remote_params(&ctor_ps);
    let ctor_names: Vec<&Ident> = ctor_ps.iter().map(|p| &p.name).collect();
    let ctor_params = param_entries(&ctor_ps);
    let ctor_fn = format_ident!("__prism_actor_new_{}", ty);
    let class_static = format_ident!("__PRISM_ACTOR_CLASS_{}", ty);

    let mut handle_methods = Vec::new();
    let mut registered = Vec::new();
    for m in &methods {
        let Some(recv) = m.sig.receiver() else {
            continue;
        };
        if recv.reference.is_none() || !m.sig.generics.params.is_empty() {
            continue;
        }
        let exclusive = recv.mutability.is_some();
        let mname = &m.sig.ident;
        let mvis = reach(&m.vis);
        let ps = params(&m.sig)?;
        let (binds, uses) = local_bindings(&ps);
        let (decls, args) = remote_params(&ps);
        let param_list = param_entries(&ps);
        let ret = return_type(&m.sig);
        let call = if m.sig.asyncness.is_some() {
            quote!(::prism::__private::block_on(__this.#mname(#(#uses),*)))
        } else {
            quote!(__this.#mname(#(#uses),*))
        };
        // The method's one body, run wherever the actor lives: on shared argument
        // values, decoded first in a process that received them as bytes.
        let body_fn = format_ident!("__prism_actor_{}_{}", ty, mname);
        let method_static = format_ident!("__PRISM_ACTOR_{}_{}", ty, mname);
        let (recv_ty, downcast, variant) = if exclusive {
            (
                quote!(&mut (dyn ::std::any::Any + ::std::marker::Send + ::std::marker::Sync)),
                quote!(downcast_mut),
                quote!(Exclusive),
            )
        } else {
            (
                quote!(&(dyn ::std::any::Any + ::std::marker::Send + ::std::marker::Sync)),
                quote!(downcast_ref),
                quote!(Shared),
            )
        };
        registered.push(quote! {
            #[doc(hidden)]
            #[allow(non_snake_case, unused_mut)]
            fn #body_fn(
                __state: #recv_ty,
                mut __args: ::prism::task::LocalArgs,
            ) -> ::prism::task::Output {
                let __this = __state
                    .#downcast::<#ty>()
                    .expect("an actor's state has the actor's type");
                #(#binds)*
                ::prism::task::Output::new(#call)
            }

            #[doc(hidden)]
            #[allow(non_upper_case_globals)]
            static #method_static: ::prism::actor::ActorMethod = ::prism::actor::ActorMethod {
                name: ::std::concat!(
                    ::std::module_path!(), "::", ::std::stringify!(#ty), "::", ::std::stringify!(#mname)
                ),
                body: ::prism::actor::Method::#variant(#body_fn),
                params: #param_list,
            };

            ::prism::__private::inventory::submit! {
                ::prism::actor::MethodRegistration(&#method_static)
            }
        });
        let doc = format!(
            "Calls [`{ty}::{mname}`] on the actor; returns a reference to the result at once."
        );
        handle_methods.push(quote! {
            #[doc = #doc]
            #[allow(clippy::too_many_arguments)]
            #mvis fn #mname(&self, #(#decls),*) -> ::prism::ObjectRef<#ret> {
                self.0.call(::std::stringify!(#mname), #args, #method_static.body)
            }
        });
    }

    Ok(quote! {
        // The constructor must be called `new`; a `Default` impl would be a second way in.
        #[allow(clippy::new_without_default)]
        #imp

        impl #ty {
            /// Starts the actor with its constructor's arguments; returns its handle at once.
            #[allow(clippy::too_many_arguments)]
            #ctor_vis fn remote(#(#ctor_decls),*) -> #handle {
                Self::options().remote(#(#ctor_names),*)
            }

            /// Options for the actor: resources, a name, concurrency; then `.remote(..)`.
            #ctor_vis fn options() -> #options_ty {
                #options_ty {
                    options: ::prism::ActorOptions::default(),
                }
            }
        }

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #ctor_vis struct #options_ty {
            options: ::prism::ActorOptions,
        }

        impl #options_ty {
            ::prism::__option_methods!();

            /// How many calls may run at once (default 1: one at a time, in order).
            #ctor_vis fn max_concurrency(mut self, n: usize) -> Self {
                self.options = self.options.max_concurrency(n);
                self
            }

            /// How many times the actor is restarted if its process dies.
            #ctor_vis fn max_restarts(mut self, n: u32) -> Self {
                self.options = self.options.max_restarts(n);
                self
            }

            /// Starts the actor with these options.
            #[allow(clippy::too_many_arguments)]
            #ctor_vis fn remote(self, #(#ctor_decls),*) -> #handle {
                ::prism::__private::spawn::<#ty>(self.options, #ctor_args, #class_static.construct)
            }
        }

        impl #handle {
            #(#handle_methods)*
        }

        #(#registered)*

        #[doc(hidden)]
        #[allow(non_snake_case, unused_mut)]
        fn #ctor_fn(
            mut __args: ::prism::task::LocalArgs,
        ) -> ::std::boxed::Box<dyn ::std::any::Any + ::std::marker::Send + ::std::marker::Sync> {
            #(#ctor_binds)*
            ::std::boxed::Box::new(#ty::new(#(#ctor_uses),*))
        }

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        static #class_static: ::prism::actor::ActorClass = ::prism::actor::ActorClass {
            name: ::std::concat!(::std::module_path!(), "::", ::std::stringify!(#ty)),
            construct: #ctor_fn,
            params: #ctor_params,
        };

        ::prism::__private::inventory::submit! {
            ::prism::actor::ClassRegistration(&#class_static)
        }
    })
}
