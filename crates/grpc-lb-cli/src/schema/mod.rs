//! Where the tool learns a service's schema: server reflection by default,
//! or `.proto` files (`--proto`, `--import-path`) compiled in-process, or
//! protosets (`--protoset`); and the lookups `call`, `list` and `describe`
//! make in it.

mod files;
mod reflection;

use std::path::PathBuf;

use clap::Args;
use prost_reflect::{
    DescriptorPool, EnumDescriptor, MessageDescriptor, MethodDescriptor, ServiceDescriptor,
};

use crate::CliError;
pub(crate) use reflection::Reflection;

/// The method `call` makes when none is named.
pub(crate) const DEFAULT_METHOD: &str = "helloworld.Greeter/SayHello";

/// The schema flags of `call`, `list` and `describe`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct SchemaArgs {
    /// Read the schema from this .proto file instead of server reflection
    /// (repeatable); compiled in-process, no protoc needed.
    #[arg(long = "proto", value_name = "FILE")]
    pub(crate) protos: Vec<PathBuf>,

    /// Where the imports of --proto files are found (repeatable; default:
    /// the directory of each --proto file). Protobuf's well-known types are
    /// always found.
    #[arg(long = "import-path", value_name = "DIR", requires = "protos")]
    pub(crate) import_paths: Vec<PathBuf>,

    /// Read the schema from this protoset, an encoded FileDescriptorSet
    /// (`protoc --include_imports -o`, `buf build -o`), instead of server
    /// reflection (repeatable).
    #[arg(long = "protoset", value_name = "FILE", conflicts_with = "protos")]
    pub(crate) protosets: Vec<PathBuf>,
}

impl SchemaArgs {
    /// The pool the files give, or `None` for server reflection.
    pub(crate) fn file_pool(&self) -> Result<Option<DescriptorPool>, CliError> {
        if !self.protos.is_empty() {
            return files::compile_protos(&self.protos, &self.import_paths).map(Some);
        }
        if !self.protosets.is_empty() {
            return files::read_protosets(&self.protosets).map(Some);
        }
        Ok(None)
    }

    /// Where the schema comes from, for messages.
    fn origin(&self) -> &'static str {
        if !self.protos.is_empty() {
            "the --proto files"
        } else {
            "the --protoset files"
        }
    }
}

/// A schema to look names up in.
#[derive(Debug)]
pub(crate) enum Schema {
    /// From files, all known up front.
    Files {
        pool: DescriptorPool,
        origin: &'static str,
    },
    /// From the server, fetched as names are looked up.
    Reflection(Box<Reflection>),
}

/// A symbol `describe` can show.
#[derive(Debug, Clone)]
pub(crate) enum Symbol {
    Service(ServiceDescriptor),
    Method(MethodDescriptor),
    Message(MessageDescriptor),
    Enum(EnumDescriptor),
}

impl Schema {
    /// The schema `schema_args` name, else `reflection`.
    pub(crate) fn new(
        schema_args: &SchemaArgs,
        reflection: impl FnOnce() -> Reflection,
    ) -> Result<Schema, CliError> {
        Ok(match schema_args.file_pool()? {
            Some(pool) => Schema::Files {
                pool,
                origin: schema_args.origin(),
            },
            None => Schema::Reflection(Box::new(reflection())),
        })
    }

    fn origin(&self) -> String {
        match self {
            Schema::Files { origin, .. } => (*origin).to_owned(),
            Schema::Reflection(reflection) => {
                format!("server reflection at {}", reflection.target())
            }
        }
    }

    /// Makes sure the file defining `symbol` is in the pool; `false` when
    /// no such symbol is known.
    async fn load(&mut self, symbol: &str) -> Result<bool, CliError> {
        match self {
            Schema::Files { .. } => Ok(true),
            Schema::Reflection(reflection) => {
                if has_symbol(reflection.pool(), symbol) {
                    return Ok(true);
                }
                reflection.load_symbol(symbol).await
            }
        }
    }

    fn pool(&self) -> &DescriptorPool {
        match self {
            Schema::Files { pool, .. } => pool,
            Schema::Reflection(reflection) => reflection.pool(),
        }
    }

    /// The method `name` (`package.Service/Method` or
    /// `package.Service.Method`); unknown services and methods are usage
    /// errors that say which part is unknown.
    pub(crate) async fn method(&mut self, name: &str) -> Result<MethodDescriptor, CliError> {
        let (service_name, method_name) = split_method(name)?;
        let service = self.service(service_name).await?;
        let found = service
            .methods()
            .find(|method| method.name() == method_name);
        found.ok_or_else(|| {
            let known: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
            CliError::usage(format!(
                "service {service_name} has no method {method_name:?} (it has: {})",
                known.join(", ")
            ))
        })
    }

    /// The service `name`.
    pub(crate) async fn service(&mut self, name: &str) -> Result<ServiceDescriptor, CliError> {
        self.load(name).await?;
        self.pool()
            .get_service_by_name(name)
            .ok_or_else(|| self.not_found("service", name))
    }

    /// The services there are: those the server lists, or those the files
    /// define.
    pub(crate) async fn service_names(&mut self) -> Result<Vec<String>, CliError> {
        match self {
            Schema::Files { pool, .. } => {
                let mut names: Vec<String> =
                    pool.services().map(|s| s.full_name().to_owned()).collect();
                names.sort();
                Ok(names)
            }
            Schema::Reflection(reflection) => reflection.list_services().await,
        }
    }

    /// A service, method, message or enum by its full name (a leading dot
    /// allowed; a method also as `package.Service/Method`).
    pub(crate) async fn symbol(&mut self, name: &str) -> Result<Symbol, CliError> {
        let name = name.trim_start_matches('.');
        if name.contains('/') {
            return self.method(name).await.map(Symbol::Method);
        }
        if !self.load(name).await? {
            // A method is found through its service by some servers only.
            if let Some((service, _)) = name.rsplit_once('.') {
                if self.load(service).await? {
                    if let Some(symbol) = lookup(self.pool(), name) {
                        return Ok(symbol);
                    }
                }
            }
            return Err(self.not_found("symbol", name));
        }
        lookup(self.pool(), name).ok_or_else(|| self.not_found("symbol", name))
    }

    fn not_found(&self, kind: &str, name: &str) -> CliError {
        CliError::usage(format!("{kind} {name:?} not found in {}", self.origin()))
    }
}

/// `package.Service/Method` or `package.Service.Method` (a leading `/` or
/// `.` allowed) as (service, method).
pub(crate) fn split_method(name: &str) -> Result<(&str, &str), CliError> {
    let trimmed = name.trim_start_matches(['/', '.']);
    let split = trimmed
        .rsplit_once('/')
        .or_else(|| trimmed.rsplit_once('.'));
    match split {
        Some((service, method))
            if !service.is_empty()
                && !method.is_empty()
                && !service.contains('/')
                && !method.contains('/') =>
        {
            Ok((service, method))
        }
        _ => Err(CliError::usage(format!(
            "bad method {name:?}: expected package.Service/Method"
        ))),
    }
}

fn has_symbol(pool: &DescriptorPool, name: &str) -> bool {
    lookup(pool, name).is_some()
}

fn lookup(pool: &DescriptorPool, name: &str) -> Option<Symbol> {
    if let Some(service) = pool.get_service_by_name(name) {
        return Some(Symbol::Service(service));
    }
    if let Some(message) = pool.get_message_by_name(name) {
        return Some(Symbol::Message(message));
    }
    if let Some(enumeration) = pool.get_enum_by_name(name) {
        return Some(Symbol::Enum(enumeration));
    }
    let (service, method) = name.rsplit_once('.')?;
    let service = pool.get_service_by_name(service)?;
    let method = service.methods().find(|m| m.name() == method)?;
    Some(Symbol::Method(method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_with_a_slash_or_a_dot() {
        let ok = |name| split_method(name).ok();
        assert_eq!(
            ok("helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(
            ok("helloworld.Greeter.SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(
            ok("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(ok("Greeter/SayHello"), Some(("Greeter", "SayHello")));
        for bad in [
            "",
            "SayHello",
            "helloworld.Greeter/",
            "/SayHello",
            "a/b/c",
            ".",
        ] {
            assert!(split_method(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_files_schema_finds_services_methods_messages_and_enums() {
        let pool = DescriptorPool::decode(grpc_lb_helloworld::FILE_DESCRIPTOR_SET).unwrap();
        let mut schema = Schema::Files {
            pool,
            origin: "the --proto files",
        };
        let method = schema.method(DEFAULT_METHOD).await.unwrap();
        assert_eq!(method.input().full_name(), "helloworld.HelloRequest");
        assert!(matches!(
            schema.symbol("helloworld.HelloReply").await,
            Ok(Symbol::Message(_))
        ));
        assert!(matches!(
            schema.symbol(".helloworld.Greeter.SayHello").await,
            Ok(Symbol::Method(_))
        ));
        assert_eq!(
            schema.service_names().await.unwrap(),
            vec!["helloworld.Greeter".to_owned()]
        );
        let error = schema
            .method("helloworld.Greeter/SayBye")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, CliError::Usage(m) if m.contains("no method \"SayBye\" (it has: SayHello)")),
            "{error:?}"
        );
        let error = schema
            .method("helloworld.Nobody/SayHello")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, CliError::Usage(m) if m == "service \"helloworld.Nobody\" not found in the --proto files"),
            "{error:?}"
        );
    }
}
