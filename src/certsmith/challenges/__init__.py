"""Challenge solvers: make an authorization's challenge visible to the CA, then take it away."""

from certsmith.challenges.base import ChallengeJob, ChallengeSolver

__all__ = ["ChallengeJob", "ChallengeSolver"]
