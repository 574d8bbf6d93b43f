//! The six Durable Functions application patterns, shared by the golden-history tests.

#![allow(dead_code)]

use std::time::Duration;

use perdure_core::orchestration::{Either, OrchestrationContext, TaskError, when_all, when_any2};
use perdure_core::{EntityContext, EntityId, FailureDetails, Registry};

/// Registers the six patterns and their functions.
pub(crate) fn patterns() -> Registry {
    let mut r = Registry::new();
    // 1. Function chaining.
    r.add_orchestration("Chaining", |ctx: OrchestrationContext, ()| async move {
        let mut out = Vec::new();
        for city in ["Tokyo", "Seattle", "London"] {
            out.push(ctx.call_activity::<String>("SayHello", city).await?);
        }
        Ok::<_, TaskError>(out)
    });
    r.add_activity("SayHello", |_ctx, city: String| async move {
        Ok::<_, String>(format!("Hello {city}!"))
    });

    // 2. Fan-out / fan-in.
    r.add_orchestration(
        "FanOutFanIn",
        |ctx: OrchestrationContext, n: u32| async move {
            let items: Vec<u32> = ctx.call_activity("GetWorkItems", n).await?;
            let tasks = items
                .iter()
                .map(|i| ctx.call_activity::<u64>("ProcessItem", i));
            let mut total = 0;
            for r in when_all(tasks).await {
                total += r?;
            }
            let _: () = ctx.call_activity("SaveTotal", total).await?;
            Ok::<_, TaskError>(total)
        },
    );
    r.add_activity("GetWorkItems", |_ctx, n: u32| async move {
        Ok::<_, String>((1..=n).collect::<Vec<u32>>())
    });
    r.add_activity("ProcessItem", |_ctx, i: u32| async move {
        Ok::<_, String>(u64::from(i) * 10)
    });
    r.add_activity(
        "SaveTotal",
        |_ctx, _t: u64| async move { Ok::<_, String>(()) },
    );

    // 3. Async HTTP API: a long-running job whose progress clients poll through the status
    // endpoint (custom status).
    r.add_orchestration(
        "AsyncHttpApi",
        |ctx: OrchestrationContext, job: String| async move {
            ctx.set_custom_status(&"starting");
            let ticket: String = ctx.call_activity("StartJob", &job).await?;
            ctx.set_custom_status(&"running");
            ctx.create_timer_after(Duration::from_secs(30)).await;
            let result: String = ctx.call_activity("GetJobResult", &ticket).await?;
            ctx.set_custom_status(&"done");
            Ok::<_, TaskError>(result)
        },
    );
    r.add_activity("StartJob", |_ctx, job: String| async move {
        Ok::<_, String>(format!("ticket-{job}"))
    });
    r.add_activity("GetJobResult", |_ctx, t: String| async move {
        Ok::<_, String>(format!("result of {t}"))
    });

    // 4. Monitor: poll until a condition holds or the monitor expires.
    r.add_orchestration(
        "Monitor",
        |ctx: OrchestrationContext, job: String| async move {
            let expiry = ctx.current_utc_date_time().add(Duration::from_secs(3600));
            let mut checks = 0u32;
            while ctx.current_utc_date_time() < expiry {
                checks += 1;
                let status: String = ctx.call_activity("GetJobStatus", (&job, checks)).await?;
                if status == "Completed" {
                    let _: () = ctx.call_activity("SendAlert", &job).await?;
                    return Ok::<_, TaskError>(checks);
                }
                ctx.create_timer_after(Duration::from_secs(300)).await;
            }
            Ok(0)
        },
    );
    r.add_activity(
        "GetJobStatus",
        |_ctx, (_job, n): (String, u32)| async move {
            Ok::<_, String>(if n >= 3 { "Completed" } else { "Running" })
        },
    );
    r.add_activity("SendAlert", |_ctx, _job: String| async move {
        Ok::<_, String>(())
    });

    // 5. Human interaction: approval with a timeout.
    r.add_orchestration(
        "HumanInteraction",
        |ctx: OrchestrationContext, request: String| async move {
            let _: () = ctx.call_activity("RequestApproval", &request).await?;
            let approval = ctx.wait_for_external_event::<bool>("ApprovalEvent");
            let timeout = ctx.create_timer_after(Duration::from_secs(72 * 3600));
            let outcome = match when_any2(approval, timeout).await {
                Either::Left(approved) => {
                    if approved? {
                        "approved"
                    } else {
                        "rejected"
                    }
                }
                Either::Right(()) => {
                    let _: () = ctx.call_activity("Escalate", &request).await?;
                    "escalated"
                }
            };
            Ok::<_, TaskError>(outcome.to_string())
        },
    );
    r.add_activity("RequestApproval", |_ctx, _r: String| async move {
        Ok::<_, String>(())
    });
    r.add_activity(
        "Escalate",
        |_ctx, _r: String| async move { Ok::<_, String>(()) },
    );

    // 6. Aggregator: a counter entity fed by signals, read by a call.
    r.add_entity(
        "Counter",
        |ctx: &mut EntityContext<i64>| -> Result<i64, FailureDetails> {
            match ctx.operation_name() {
                "add" => {
                    let n: i64 = ctx.input()?;
                    *ctx.state_or_default() += n;
                    Ok(*ctx.state_or_default())
                }
                "reset" => {
                    ctx.set_state(0);
                    Ok(0)
                }
                "get" => Ok(ctx.state().copied().unwrap_or(0)),
                _ => Err(ctx.unknown_operation()),
            }
        },
    );
    r.add_orchestration(
        "Aggregator",
        |ctx: OrchestrationContext, values: Vec<i64>| async move {
            let counter = EntityId::new("Counter", "totals")
                .map_err(|e| FailureDetails::new("BadId", e.to_string()))?;
            for v in values {
                ctx.signal_entity(&counter, "add", v)?;
            }
            let total: i64 = ctx.call_entity(&counter, "get", ()).await?;
            Ok::<_, FailureDetails>(total)
        },
    );
    r
}
