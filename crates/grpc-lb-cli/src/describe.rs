//! `grpc-lb list` and `grpc-lb describe`, as grpcurl has them: the services
//! a server (or the schema files) has, a service's methods, and any
//! service, method, message or enum shown as proto source.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use prost_reflect::{
    Cardinality, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor, Syntax,
};

use crate::options::{Built, ChannelArgs};
use crate::request::HeaderArgs;
use crate::schema::{Reflection, Schema, SchemaArgs, Symbol};
use crate::stack::call_stack;
use crate::CliResult;

/// What `list` and `describe` share.
#[derive(Debug, Args)]
pub(crate) struct LookupArgs {
    /// The target whose reflection service answers (also with --proto or
    /// --protoset, which then answer instead).
    target: String,

    #[command(flatten)]
    schema: SchemaArgs,

    #[command(flatten)]
    headers: HeaderArgs,

    /// The deadline of the reflection calls, in ms; 0 for none.
    #[arg(long, value_name = "T", default_value_t = 5000)]
    timeout_ms: u64,

    #[command(flatten)]
    channel: ChannelArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    lookup: LookupArgs,

    /// List this service's methods instead of the services.
    #[arg(value_name = "SERVICE")]
    service: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DescribeArgs {
    #[command(flatten)]
    lookup: LookupArgs,

    /// A service, method, message or enum, by its full name (default: every
    /// service).
    #[arg(value_name = "SYMBOL")]
    symbol: Option<String>,
}

impl LookupArgs {
    /// The schema to look in; the channel lives as long as it.
    fn schema(&self) -> Result<(Schema, Built), crate::CliError> {
        let metadata = self.headers.metadata()?;
        let built = self.channel.build(&self.target, false)?;
        let timeout = (self.timeout_ms > 0).then(|| Duration::from_millis(self.timeout_ms));
        let stack = call_stack(
            &crate::channel::Client::Channel(built.channel.clone()),
            built.stack,
        );
        let schema = Schema::new(&self.schema, || {
            Reflection::new(stack, &self.target, metadata, timeout)
        })?;
        Ok((schema, built))
    }
}

/// `list`: service names, or one service's methods, one per line, sorted.
pub(crate) async fn list(args: ListArgs) -> CliResult {
    let (mut schema, _built) = args.lookup.schema()?;
    let names = match &args.service {
        None => schema.service_names().await?,
        Some(service) => {
            let service = schema.service(service.trim_start_matches('.')).await?;
            service
                .methods()
                .map(|method| method.full_name().to_owned())
                .collect()
        }
    };
    for name in names {
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `describe`: each symbol as proto source, after a line saying what it is.
pub(crate) async fn describe(args: DescribeArgs) -> CliResult {
    let (mut schema, _built) = args.lookup.schema()?;
    let names = match &args.symbol {
        Some(symbol) => vec![symbol.clone()],
        None => schema.service_names().await?,
    };
    let mut out = String::new();
    for name in names {
        let symbol = schema.symbol(&name).await?;
        out.push_str(&render(&symbol));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// A symbol as grpcurl shows it: `NAME is a KIND:`, then its definition.
pub(crate) fn render(symbol: &Symbol) -> String {
    let mut out = String::new();
    match symbol {
        Symbol::Service(service) => {
            let _ = writeln!(out, "{} is a service:", service.full_name());
            service_source(&mut out, service);
        }
        Symbol::Method(method) => {
            let _ = writeln!(out, "{} is a method:", method.full_name());
            let _ = writeln!(out, "{}", rpc_line(method));
        }
        Symbol::Message(message) => {
            let _ = writeln!(out, "{} is a message:", message.full_name());
            message_source(&mut out, message, 0);
        }
        Symbol::Enum(enumeration) => {
            let _ = writeln!(out, "{} is an enum:", enumeration.full_name());
            enum_source(&mut out, enumeration, 0);
        }
    }
    out
}

fn service_source(out: &mut String, service: &ServiceDescriptor) {
    let _ = writeln!(out, "service {} {{", service.name());
    for method in service.methods() {
        let _ = writeln!(out, "  {}", rpc_line(&method));
    }
    let _ = writeln!(out, "}}");
}

fn rpc_line(method: &MethodDescriptor) -> String {
    let stream = |yes: bool| if yes { "stream " } else { "" };
    format!(
        "rpc {} ( {}.{} ) returns ( {}.{} );",
        method.name(),
        stream(method.is_client_streaming()),
        method.input().full_name(),
        stream(method.is_server_streaming()),
        method.output().full_name()
    )
}

fn message_source(out: &mut String, message: &MessageDescriptor, depth: usize) {
    let indent = "  ".repeat(depth);
    let _ = writeln!(out, "{indent}message {} {{", message.name());
    let mut oneofs_done: Vec<String> = Vec::new();
    for field in message.fields() {
        match field
            .containing_oneof()
            .filter(|oneof| !oneof.is_synthetic())
        {
            Some(oneof) => {
                if oneofs_done.iter().any(|name| name == oneof.name()) {
                    continue;
                }
                oneofs_done.push(oneof.name().to_owned());
                let _ = writeln!(out, "{indent}  oneof {} {{", oneof.name());
                for member in oneof.fields() {
                    let _ = writeln!(out, "{indent}    {}", field_line(&member));
                }
                let _ = writeln!(out, "{indent}  }}");
            }
            None => {
                let _ = writeln!(out, "{indent}  {}", field_line(&field));
            }
        }
    }
    for child in message.child_messages().filter(|m| !m.is_map_entry()) {
        message_source(out, &child, depth + 1);
    }
    for child in message.child_enums() {
        enum_source(out, &child, depth + 1);
    }
    let _ = writeln!(out, "{indent}}}");
}

fn enum_source(out: &mut String, enumeration: &EnumDescriptor, depth: usize) {
    let indent = "  ".repeat(depth);
    let _ = writeln!(out, "{indent}enum {} {{", enumeration.name());
    for value in enumeration.values() {
        let _ = writeln!(out, "{indent}  {} = {};", value.name(), value.number());
    }
    let _ = writeln!(out, "{indent}}}");
}

fn field_line(field: &FieldDescriptor) -> String {
    let kind = if field.is_map() {
        match field.kind() {
            Kind::Message(entry) => format!(
                "map<{}, {}>",
                type_name(&entry.map_entry_key_field().kind()),
                type_name(&entry.map_entry_value_field().kind())
            ),
            other => type_name(&other),
        }
    } else {
        type_name(&field.kind())
    };
    let label = if field.is_map() {
        ""
    } else {
        let proto3 = field.parent_message().parent_file().syntax() == Syntax::Proto3;
        match field.cardinality() {
            Cardinality::Repeated => "repeated ",
            Cardinality::Required => "required ",
            Cardinality::Optional
                if field.containing_oneof().is_some_and(|o| !o.is_synthetic()) =>
            {
                ""
            }
            Cardinality::Optional
                if proto3 && !field.field_descriptor_proto().proto3_optional() =>
            {
                ""
            }
            Cardinality::Optional => "optional ",
        }
    };
    format!("{label}{kind} {} = {};", field.name(), field.number())
}

fn type_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(message) => format!(".{}", message.full_name()),
        Kind::Enum(enumeration) => format!(".{}", enumeration.full_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;

    #[test]
    fn symbols_render_as_proto_source() {
        let pool = DescriptorPool::decode(grpc_lb_helloworld::FILE_DESCRIPTOR_SET).unwrap();
        let service = pool.get_service_by_name("helloworld.Greeter").unwrap();
        assert_eq!(
            render(&Symbol::Service(service)),
            "helloworld.Greeter is a service:\nservice Greeter {\n  rpc SayHello ( .helloworld.HelloRequest ) returns ( .helloworld.HelloReply );\n}\n"
        );
        let message = pool.get_message_by_name("helloworld.HelloRequest").unwrap();
        assert_eq!(
            render(&Symbol::Message(message)),
            "helloworld.HelloRequest is a message:\nmessage HelloRequest {\n  string name = 1;\n}\n"
        );
    }
}
