"""The synthesizer that fit_synthesizer fits and generate samples from.

Two parts, both saved in one directory (DVC-tracked) by `bundle`:

1. Row model (`copula`): a Gaussian copula per (class, type) segment, over rows in the
   representation of `representation` (log amounts and balances, balance modes, hour).
2. Sequencer (`sequencer`): episode templates cut from the reference. Generate draws
   templates at random (the empirical episode distribution of each class), fills each slot
   with a copula row of the slot's class and type (amounts ordered by the template's
   ranks), places episodes in time (day uniform over the reference span, hour from the
   copula row, seconds uniform) and assigns users: legit episodes to customers whose
   activity is bootstrapped from the reference's episodes per user, fraud victims among
   the same customers, later fraud actors (mules) from a pool sized by the reference's mule
   reuse. So card-testing bursts, takeover-then-cash-out pairs and legit sprees keep their
   timing, and the time since a user's previous transaction follows the reference.
   What it does not keep: balances across one user's rows are not chained (each row's
   balances are consistent within the row only).

`quality` scores the row model with SDV's quality report."""
