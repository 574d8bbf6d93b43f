//! Accounts (an entity), `Transfer` (a critical section over two accounts) and `Withdraw`.

use perdure_core::{
    EntityId, EntityInterface, FailureDetails, OrchestrationContext, entity, orchestration,
};
use serde::{Deserialize, Serialize};

/// An account; its state is the bare balance.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Account(pub i64);

#[entity]
impl Account {
    /// Adds `n` (saturating) and returns the balance.
    pub fn deposit(&mut self, n: i64) -> i64 {
        self.0 = self.0.saturating_add(n);
        self.0
    }

    /// Takes `n` and returns the balance; fails when the funds are short.
    pub fn withdraw(&mut self, n: i64) -> Result<i64, FailureDetails> {
        if self.0 < n {
            return Err(FailureDetails::new(
                "InsufficientFunds",
                format!("balance {} is below {n}", self.0),
            ));
        }
        self.0 -= n;
        Ok(self.0)
    }

    /// The balance.
    pub fn balance(&self) -> i64 {
        self.0
    }
}

/// Input of `Transfer`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferInput {
    /// Source account key.
    pub from: String,
    /// Destination account key.
    pub to: String,
    /// Amount.
    pub amount: i64,
    /// Wait, holding both locks, for the event `Confirm` (true: transfer, false: cancel).
    #[serde(default)]
    pub confirm: bool,
}

fn account_id(key: &str) -> Result<EntityId, FailureDetails> {
    Account::entity_id(key).map_err(|e| FailureDetails::new("BadInput", e.to_string()))
}

/// Moves money between two accounts inside a critical section (both locked).
#[orchestration(name = "Transfer")]
pub async fn transfer(
    ctx: OrchestrationContext,
    input: TransferInput,
) -> Result<bool, FailureDetails> {
    let section = ctx
        .lock_entities(&[account_id(&input.from)?, account_id(&input.to)?])
        .await
        .map_err(|e| FailureDetails::new("LockFailed", e.to_string()))?;
    let (from, to) = (
        ctx.entity::<Account>(&input.from),
        ctx.entity::<Account>(&input.to),
    );
    let balance = from.balance().await?;
    let confirmed = !input.confirm || ctx.wait_for_external_event::<bool>("Confirm").await?;
    let ok = confirmed && balance >= input.amount;
    if ok {
        from.withdraw(input.amount).await?;
        to.deposit(input.amount).await?;
    }
    section.release();
    Ok(ok)
}

/// Input of `Withdraw`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WithdrawInput {
    /// Account key.
    pub account: String,
    /// Amount.
    pub amount: i64,
}

/// Withdraws from an account and returns the new balance (fails when the funds are short; a
/// rewind after a deposit completes it).
#[orchestration(name = "Withdraw")]
pub async fn withdraw(
    ctx: OrchestrationContext,
    input: WithdrawInput,
) -> Result<i64, FailureDetails> {
    // An invalid key is the caller's mistake (`BadInput`), found before anything is sent.
    account_id(&input.account)?;
    Ok(ctx
        .entity::<Account>(input.account)
        .withdraw(input.amount)
        .await?)
}
