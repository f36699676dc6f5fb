//! Data connectors' generated tools (SQL query, listings) run through the
//! broker: credential, policy and platform client.

use serde_json::Value;

use super::{Broker, Credential, MAX_RESULT_BYTES, json_len, result_too_large};
use crate::catalog::Connector;
use crate::error::ToolError;
use crate::store::ToolkitRecord;

impl Broker {
    /// Runs a generated data tool (query, listing) on the connector's
    /// platform under the app's data policy.
    pub(super) async fn call_data(
        &self,
        connector: &Connector,
        kind: crate::catalog::DataTool,
        base_url: &url::Url,
        params: &serde_json::Map<String, Value>,
        record: &ToolkitRecord,
        credential: &mut Credential,
    ) -> Result<Value, ToolError> {
        use crate::catalog::{DataPlatform, DataTool};
        use crate::data::{DataError, DataOp, DataTarget, Platform, QueryRequest};
        let slug = &connector.spec.slug;
        let Some(data) = &connector.spec.data else {
            return Err(ToolError::Unavailable(format!(
                "`{slug}` is not a data connector"
            )));
        };
        if data.per_app_host && record.endpoints.api_base_url.is_none() {
            return Err(ToolError::NotConnected(format!(
                "every `{slug}` account has its own host: an admin must configure apiBaseUrl for it (POST /v1/{}/integrations/configure)",
                record.app
            )));
        }
        let text = |name: &str| params.get(name).and_then(Value::as_str).map(str::to_string);
        let op = || match kind {
            DataTool::Query => DataOp::Query(QueryRequest {
                sql: text("sql").unwrap_or_default(),
                params: params
                    .get("params")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                max_rows: params.get("maxRows").and_then(Value::as_u64),
                timeout_ms: params.get("timeoutMs").and_then(Value::as_u64),
            }),
            DataTool::ListDatabases => DataOp::ListDatabases,
            DataTool::ListSchemas => DataOp::ListSchemas {
                database: text("database"),
            },
            DataTool::ListTables => DataOp::ListTables {
                database: text("database"),
                schema: text("schema"),
            },
            DataTool::DescribeTable => DataOp::DescribeTable {
                database: text("database"),
                schema: text("schema"),
                table: text("table").unwrap_or_default(),
            },
        };
        let platform = match data.platform {
            DataPlatform::Postgres => Platform::Postgres,
            DataPlatform::Snowflake => Platform::Snowflake,
            DataPlatform::Databricks => Platform::Databricks,
            DataPlatform::BigQuery => Platform::BigQuery,
        };
        let policy = record.data_policy.clone().unwrap_or_default();
        loop {
            let secret = match &*credential {
                Credential::ApiKey(k) => k,
                Credential::OAuth { token, .. } => token,
            };
            let target = DataTarget {
                platform,
                base_url,
                credential: secret,
                settings: &record.settings,
            };
            match crate::data::run(&self.client, &self.policy, &target, &policy, op()).await {
                Ok(result) => {
                    let value = serde_json::to_value(result)
                        .map_err(|e| ToolError::Unavailable(format!("result: {e}")))?;
                    if json_len(&value) > MAX_RESULT_BYTES {
                        return Err(result_too_large(
                            "the query's result",
                            "lower maxRows, or the toolkit's dataPolicy maxBytes",
                        ));
                    }
                    return Ok(value);
                }
                Err(DataError::Tool(e)) => return Err(e),
                Err(DataError::Unauthorized) => match credential {
                    Credential::OAuth {
                        token,
                        connection,
                        refreshed,
                    } if !*refreshed => {
                        let (fresh, latest) = self.force_refresh(connection).await?;
                        *token = fresh;
                        **connection = latest;
                        *refreshed = true;
                    }
                    _ => {
                        return Err(ToolError::NeedsReconnect(format!(
                            "{} refused the credential; an admin must configure a valid one, or the user must connect again",
                            connector.spec.display_name
                        )));
                    }
                },
            }
        }
    }
}
