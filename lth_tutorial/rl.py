"""Advantage actor-critic (A2C; Mnih et al. 2016) on gymnasium's classic-control tasks, as an
:class:`~lth_tutorial.objectives.Objective`: IMP, masks, rewinding and the run store work for an agent unchanged, as
Yu et al. (2019) find tickets in actor-critic agents with the same IMP and late rewinding as in vision.

One training iteration (one optimizer step) of one member::

    roll the policy out for n_steps in each of batch_size parallel environments (actions sampled from the policy)
    R_t      = r_t + gamma * R_(t+1)           (n-step returns, bootstrapped from V(s_n); 0 after a terminal state,
                                                V(final state) after a time-limit truncation)
    A_t      = R_t - V(s_t)                     (advantage; no gradient through it)
    loss     = -mean(A_t log pi(a_t|s_t)) + vf_coef * mean((R_t - V(s_t))^2) - ent_coef * mean(entropy)
    gradients clipped to a global norm of max_grad_norm, then the optimizer step

Settings follow stable-baselines3's ``A2C`` defaults (``n_steps=5``, ``gamma=0.99``, ``gae_lambda=1`` i.e. plain
n-step returns, ``vf_coef=0.5``, ``ent_coef=0.0``, ``max_grad_norm=0.5``, advantages not normalised) and rl-zoo's
CartPole-v1 setting (8 parallel environments). Departures: the optimizer is the library's Adam (SB3 uses RMSprop,
lr 7e-4, alpha 0.99, eps 1e-5; :class:`~lth_tutorial.training.TrainConfig` offers SGD and Adam) at a higher rate in quick
mode (3e-3, so that CartPole is learnt in a few hundred updates on a CPU); no observation normalisation (rl-zoo normalises
Acrobot's observations). The number of parallel environments is the config's ``batch_size``; a step's batch is
``batch_size * n_steps`` transitions.

Reproducibility: member ``seed`` seeds its vector environment and a ``torch.Generator`` for its action samples
(inverse-CDF sampling), so a run is a function of its seed whether it trains alone or in a stacked population (one
forward pass serves every member; each member steps its own environments). Evaluation plays greedy (arg-max)
episodes: ``eval_episodes`` validation episodes from one vector reset seed and as many test episodes from another,
both above every training seed and 10,000 apart (a synchronous vector environment gives sub-environment ``i`` the
seed ``seed + i``, so the two sets never meet); ``val_loss`` is minus the mean validation return, so early stopping
picks the best validation policy.

Vector environments reset a finished sub-environment on its *next* step (gymnasium's default ``NEXT_STEP``
autoreset): that step's transition (action ignored, reward 0) is left out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .objectives import Objective

__all__ = ["A2C", "CLASSIC_CONTROL", "a2c_losses", "n_step_returns", "random_policy_return", "clip_member_grads"]

#: gymnasium's classic-control tasks with discrete actions and flat observations (what :class:`A2C` is for).
CLASSIC_CONTROL = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
EVAL_SEED_BASE = 2 ** 32  # evaluation seeds lie above every training seed (imp.MAX_SEED)


def _make_env(env_id: str, n: int):
    import gymnasium as gym

    return gym.make_vec(env_id, num_envs=n)  # the task's own vectorised form where it has one (CartPole), else sync


@dataclass
class Rollouts:
    """One member's training environments and the state carried between steps: ``obs`` ``(E, obs_dim)`` float32,
    ``restarting`` ``(E,)`` bool (the sub-environment finished last step, so this step only resets it), and the
    generator of its action samples."""

    env: object
    obs: torch.Tensor
    restarting: torch.Tensor
    generator: torch.Generator


def n_step_returns(rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
                   next_values: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted n-step returns ``(T, B)`` of a rollout.

    ``rewards``, ``terminated``, ``truncated``: ``(T, B)``; ``next_values[t]``: V(s_(t+1)) ``(T, B)`` (no gradient).
    ``R_t = r_t + gamma * (0 if terminated_t else V(s_(t+1)) if truncated_t or t = T-1 else R_(t+1))``.
    """
    returns = torch.zeros_like(rewards)
    following = next_values[-1]
    for t in range(rewards.shape[0] - 1, -1, -1):
        bootstrap = next_values[t] if t == rewards.shape[0] - 1 else torch.where(truncated[t], next_values[t],
                                                                                   following)
        following = rewards[t] + gamma * (~terminated[t]).to(rewards.dtype) * bootstrap
        returns[t] = following
    return returns


def a2c_losses(log_probs: torch.Tensor, values: torch.Tensor, entropies: torch.Tensor, returns: torch.Tensor,
               valid: torch.Tensor, members: int, vf_coef: float, ent_coef: float) -> torch.Tensor:
    """A2C's loss per member ``(members,)`` from rollout tensors ``(T, members * E)`` (member-major columns):
    policy gradient with advantages ``R - V`` (detached), ``vf_coef`` x mean squared value error, minus
    ``ent_coef`` x mean entropy; means over the ``valid`` transitions of each member."""
    def mean(x):
        w = valid.to(x.dtype).reshape(x.shape[0], members, -1)
        return (x.reshape(x.shape[0], members, -1) * w).sum((0, 2)) / w.sum((0, 2)).clamp(min=1)

    advantages = (returns - values).detach()
    return mean(-advantages * log_probs) + vf_coef * mean((returns - values) ** 2) - ent_coef * mean(entropies)


def clip_member_grads(net: nn.Module, members: int, max_norm: float) -> None:
    """Clip each member's gradient to global norm ``max_norm`` (``torch.nn.utils.clip_grad_norm_`` per member; a
    stacked population's parameters carry the member axis first)."""
    with_grad = [p for p in net.parameters() if p.grad is not None]
    if members == 1:
        torch.nn.utils.clip_grad_norm_(with_grad, max_norm)
        return
    grads = [p.grad for p in with_grad]
    norms = torch.sqrt(sum(g.reshape(members, -1).pow(2).sum(1) for g in grads))
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


class A2C(Objective):
    """A2C on a gymnasium classic-control task (see the module docstring).

    Args:
        env_id: a gymnasium environment with a discrete action space and a flat observation (``CartPole-v1``,
            ``Acrobot-v1``, ...).
        n_steps, gamma, vf_coef, ent_coef, max_grad_norm: A2C's settings (SB3's defaults).
        eval_episodes: greedy episodes per evaluation, for validation and again for test (disjoint seeds).
        device: where the agent lives (environments run on the CPU).

    Raises:
        ValueError: an environment gymnasium does not have (listing some it has), or one whose actions are not
            discrete; bad settings.
    """

    headline = "test_return"
    monitor = "val_return"
    loss_floor = None  # the value loss grows as returns rise: only a non-finite loss means divergence
    has_validation = True
    shared_streams = False

    def __init__(self, env_id: str = "CartPole-v1", *, n_steps: int = 5, gamma: float = 0.99, vf_coef: float = 0.5,
                 ent_coef: float = 0.0, max_grad_norm: float = 0.5, eval_episodes: int = 5,
                 device: str | torch.device = "cpu"):
        import gymnasium as gym

        try:
            spec = gym.spec(env_id)
        except gym.error.Error as err:
            raise ValueError(f"gymnasium has no environment {env_id!r} ({err}); classic-control tasks with discrete "
                             f"actions: {', '.join(CLASSIC_CONTROL)}") from None
        probe = gym.make(env_id)
        try:
            if not isinstance(probe.action_space, gym.spaces.Discrete):
                raise ValueError(f"{env_id} has {type(probe.action_space).__name__} actions; A2C here needs discrete "
                                 f"actions, e.g. {', '.join(CLASSIC_CONTROL)}")
            self.obs_shape = tuple(int(s) for s in probe.observation_space.shape)
            self.n_actions = int(probe.action_space.n)
        finally:
            probe.close()
        for name, value, low in (("n_steps", n_steps, 1), ("eval_episodes", eval_episodes, 1)):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        if not 0 < gamma <= 1 or vf_coef < 0 or ent_coef < 0 or max_grad_norm <= 0:
            raise ValueError("need 0 < gamma <= 1, vf_coef >= 0, ent_coef >= 0 and max_grad_norm > 0")
        self.env_id, self.n_steps, self.gamma = env_id, int(n_steps), float(gamma)
        self.vf_coef, self.ent_coef, self.max_grad_norm = float(vf_coef), float(ent_coef), float(max_grad_norm)
        self.eval_episodes = int(eval_episodes)
        self.max_episode_steps = int(spec.max_episode_steps or 1000)
        self.device = torch.device(device)
        self.val_seed, self.test_seed = EVAL_SEED_BASE, EVAL_SEED_BASE + 10_000
        self.spec = {"name": "a2c", "env": env_id, "gymnasium": gym.__version__, "n_steps": self.n_steps,
                     "gamma": self.gamma, "vf_coef": self.vf_coef, "ent_coef": self.ent_coef,
                     "max_grad_norm": self.max_grad_norm, "eval_episodes": self.eval_episodes,
                     "val_seed": self.val_seed, "test_seed": self.test_seed}

    def __repr__(self) -> str:
        return f"A2C({self.env_id!r})"

    def build(self, model: str, seed: int) -> nn.Module:
        from . import models

        return models.build(model, self.obs_shape, self.n_actions, seed=seed, device=self.device)

    def stream(self, seed: int, batch_size: int) -> Iterator[Rollouts]:
        """The member's ``batch_size`` environments (a vector environment reset with ``seed``) and action
        generator: the same object at every step."""
        env = _make_env(self.env_id, batch_size)
        obs, _ = env.reset(seed=int(seed))
        rollouts = Rollouts(env, torch.as_tensor(obs, dtype=torch.float32, device=self.device),
                            torch.zeros(batch_size, dtype=torch.bool, device=self.device),
                            torch.Generator(device=self.device).manual_seed(int(seed)))
        while True:
            yield rollouts

    def _forward(self, net: nn.Module, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = net(obs)
        return out[:, :-1], out[:, -1]

    def rollout(self, net: nn.Module, drawn: list[Rollouts], members: int) -> dict[str, torch.Tensor]:
        """Step every member's environments ``n_steps`` times with actions sampled from its policy; tensors
        ``(n_steps, members * E)`` member-major: ``log_probs``, ``values``, ``entropies`` (with gradients),
        ``rewards``, ``terminated``, ``truncated``, ``valid``, ``next_values`` (no gradients)."""
        keys = ("log_probs", "values", "entropies", "rewards", "terminated", "truncated", "valid", "next_values")
        out = {k: [] for k in keys}
        obs = torch.cat([r.obs for r in drawn])
        for t in range(self.n_steps + 1):
            logits, values = self._forward(net, obs)
            if t > 0:
                out["next_values"].append(values.detach())
            if t == self.n_steps:
                break
            log_p = torch.log_softmax(logits, dim=1)
            with torch.no_grad():  # inverse-CDF sampling with each member's own generator
                cdf = log_p.exp().cumsum(1).reshape(members, -1, logits.shape[-1])
                u = torch.stack([torch.rand(cdf.shape[1], generator=r.generator, device=cdf.device) for r in drawn])
                actions = (cdf < u.unsqueeze(2)).sum(2).clamp(max=logits.shape[-1] - 1).reshape(-1)
            out["log_probs"].append(log_p.gather(1, actions.unsqueeze(1)).squeeze(1))
            out["entropies"].append(-(log_p.exp() * log_p).sum(1))
            out["values"].append(values)
            out["valid"].append(torch.cat([~r.restarting for r in drawn]))
            per_member = actions.reshape(members, -1).cpu().numpy()
            step_obs, rewards, terminated, truncated = [], [], [], []
            for i, r in enumerate(drawn):
                o, rew, term, trunc, _ = r.env.step(per_member[i])
                r.restarting = torch.as_tensor(term | trunc, device=self.device)
                r.obs = torch.as_tensor(o, dtype=torch.float32, device=self.device)
                step_obs.append(r.obs)
                rewards.append(np.asarray(rew, dtype=np.float32))
                terminated.append(term)
                truncated.append(trunc)
            out["rewards"].append(torch.as_tensor(np.concatenate(rewards), device=self.device))
            out["terminated"].append(torch.as_tensor(np.concatenate(terminated), device=self.device))
            out["truncated"].append(torch.as_tensor(np.concatenate(truncated), device=self.device))
            obs = torch.cat(step_obs)
        return {k: torch.stack(v) for k, v in out.items()}

    def losses(self, net: nn.Module, drawn: list, members: int) -> torch.Tensor:
        r = self.rollout(net, drawn, members)
        returns = n_step_returns(r["rewards"], r["terminated"], r["truncated"], r["next_values"], self.gamma)
        return a2c_losses(r["log_probs"], r["values"], r["entropies"], returns, r["valid"], members,
                          self.vf_coef, self.ent_coef)

    def after_backward(self, net: nn.Module, members: int) -> None:
        clip_member_grads(net, members, self.max_grad_norm)

    @torch.no_grad()
    def episode_returns(self, net: nn.Module, members: int, seed: int) -> np.ndarray:
        """Undiscounted returns ``(members, eval_episodes)`` of greedy episodes for every member, all members on the
        same episodes: a vector environment of ``eval_episodes`` reset with ``seed``."""
        n = self.eval_episodes
        envs = [_make_env(self.env_id, n) for _ in range(members)]
        obs = torch.cat([torch.as_tensor(e.reset(seed=int(seed))[0], dtype=torch.float32) for e in envs])
        totals = np.zeros((members, n))
        done = np.zeros((members, n), dtype=bool)
        try:
            for _ in range(self.max_episode_steps):
                logits, _ = self._forward(net, obs.to(self.device))
                actions = logits.argmax(1).reshape(members, -1).cpu().numpy()
                step_obs = []
                for i, e in enumerate(envs):
                    o, rew, term, trunc, _ = e.step(actions[i])
                    totals[i] += np.where(done[i], 0.0, rew)
                    done[i] |= term | trunc
                    step_obs.append(torch.as_tensor(o, dtype=torch.float32))
                if done.all():
                    break
                obs = torch.cat(step_obs)
        finally:
            for e in envs:
                e.close()
        return totals

    def evaluate(self, net: nn.Module, members: int) -> list[dict[str, float]]:
        val = self.episode_returns(net, members, self.val_seed).mean(1)
        test = self.episode_returns(net, members, self.test_seed).mean(1)
        return [{"val_loss": -float(val[i]), "val_return": float(val[i]), "test_return": float(test[i])}
                for i in range(members)]


def random_policy_return(env_id: str = "CartPole-v1", episodes: int = 100, seed: int = 0) -> float:
    """Mean undiscounted return of uniformly random actions over ``episodes`` seeded episodes (the baseline an
    agent must beat; about 22 on CartPole-v1)."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(seed)
    total = 0.0
    for i in range(episodes):
        env.reset(seed=seed + i)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += reward
            done = terminated or truncated
    env.close()
    return total / episodes
