"""A2C as an Objective: clear errors for unknown or unsuitable environments, n-step returns and the loss by hand,
reproducible seeded rollouts, disjoint evaluation seeds, per-member gradient clipping, learning CartPole, and IMP
over an agent through the run store."""

from __future__ import annotations

import pytest
import torch

from lth_tutorial import imp, population, rl
from lth_tutorial.rewinding import make_reset
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig, train

torch.set_num_threads(1)


def test_unknown_or_unsuitable_environments_are_clear_errors(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(ValueError, match="gymnasium has no environment 'CartPol-v1'.*CartPole-v1, Acrobot-v1"):
        imp.run(rl.A2C("CartPol-v1"), "actor_critic_mlp", TrainConfig(), store=store)
    with pytest.raises(ValueError, match="Pendulum-v1 has Box actions; A2C here needs discrete actions"):
        rl.A2C("Pendulum-v1")
    with pytest.raises(ValueError, match="n_steps"):
        rl.A2C("CartPole-v1", n_steps=0)
    assert not any(tmp_path.rglob("*.pt"))  # nothing cached


def test_n_step_returns_by_hand():
    # two environments, three steps; env 0 terminates at step 1, env 1 is cut by the time limit at step 0
    rewards = torch.tensor([[1.0, 2.0], [1.0, 0.0], [3.0, 1.0]])
    terminated = torch.tensor([[False, False], [True, False], [False, False]])
    truncated = torch.tensor([[False, True], [False, False], [False, False]])
    next_values = torch.tensor([[5.0, 7.0], [9.0, 4.0], [6.0, 8.0]])
    g = 0.5
    returns = rl.n_step_returns(rewards, terminated, truncated, next_values, g)
    env0 = [1 + g * 1.0, 1.0, 3 + g * 6]          # the terminal step keeps only its reward
    env1 = [2 + g * 7.0, 0 + g * (1 + g * 8), 1 + g * 8]  # the cut step bootstraps V(final state)
    assert torch.allclose(returns, torch.tensor([env0, env1]).T)


def test_rollouts_are_reproducible_and_the_loss_matches_by_hand():
    agent = rl.A2C("CartPole-v1")
    rng = torch.get_rng_state()
    net = agent.build("actor_critic_mlp", seed=0)
    first = agent.rollout(net, [next(agent.stream(seed=4, batch_size=3))], 1)
    assert torch.equal(torch.get_rng_state(), rng)  # seeded build and sampling leave the global generator alone
    again = agent.rollout(net, [next(agent.stream(seed=4, batch_size=3))], 1)
    other = agent.rollout(net, [next(agent.stream(seed=5, batch_size=3))], 1)
    assert torch.equal(first["rewards"], again["rewards"]) and torch.equal(first["values"], again["values"])
    assert not torch.equal(first["values"], other["values"])
    assert first["log_probs"].shape == (agent.n_steps, 3)

    stream = agent.stream(seed=1, batch_size=4)
    for _ in range(8):  # random-ish policy: episodes end within these steps
        r = agent.rollout(net, [next(stream)], 1)
    returns = rl.n_step_returns(r["rewards"], r["terminated"], r["truncated"], r["next_values"], agent.gamma)
    w = r["valid"].float()
    adv = (returns - r["values"]).detach()
    by_hand = (-(w * adv * r["log_probs"]).sum() + agent.vf_coef * (w * (returns - r["values"]) ** 2).sum()
               - agent.ent_coef * (w * r["entropies"]).sum()) / w.sum()
    library = rl.a2c_losses(r["log_probs"], r["values"], r["entropies"], returns, r["valid"], 1, agent.vf_coef,
                            agent.ent_coef)
    assert torch.allclose(library, by_hand.reshape(1))
    by_hand.backward()  # the loss has a graph into the network
    assert net.policy[0].weight.grad is not None


def test_evaluation_episodes_are_seeded_and_val_test_disjoint():
    agent = rl.A2C("CartPole-v1", eval_episodes=3)
    assert agent.val_seed != agent.test_seed and abs(agent.val_seed - agent.test_seed) >= agent.eval_episodes
    assert min(agent.val_seed, agent.test_seed) >= imp.MAX_SEED  # never a training seed
    net = agent.build("actor_critic_mlp", seed=0)
    a, b = agent.evaluate(net, 1), agent.evaluate(net, 1)
    assert a == b and a[0]["val_loss"] == -a[0]["val_return"]
    val, test = agent.episode_returns(net, 1, agent.val_seed), agent.episode_returns(net, 1, agent.test_seed)
    assert val.shape == (1, 3) and not (val == test).all()


def test_member_gradient_clipping_matches_torch_per_member():
    agent = rl.A2C("CartPole-v1")
    nets = [agent.build("actor_critic_mlp", seed=s) for s in (0, 1)]
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    for net in nets:
        (net(x) ** 2).sum().mul(50).backward()
    stacked = population.stack(nets)
    for p, (name, _) in zip(stacked.parameters(), stacked.named_parameters()):
        p.grad = torch.stack([dict(n.named_parameters())[name].grad for n in nets])
    rl.clip_member_grads(stacked, 2, 0.5)
    for i, net in enumerate(nets):
        rl.clip_member_grads(net, 1, 0.5)
        for name, p in stacked.named_parameters():
            assert torch.allclose(p.grad[i], dict(net.named_parameters())[name].grad, atol=1e-6)


def test_a2c_learns_cartpole_well_above_a_random_policy():
    """Measured on a 2-core x86 CPU: a uniformly random policy returns 23.7 on CartPole-v1 (100 seeded episodes);
    A2C (Adam 3e-3, 8 environments x 5 steps, 250 updates) reached a greedy test return (5 episodes, at the
    validation-chosen evaluation) of 500, the maximum, with seed 0 (seeds 1 and 2: 266 and 347). The test asks
    for 150 -- more than six times the random policy's return and 350 below what seed 0 reached -- leaving room
    for another CPU's float rounding to change the sampled trajectory."""
    random_return = rl.random_policy_return("CartPole-v1", episodes=100)
    assert 15 < random_return < 35
    agent = rl.A2C("CartPole-v1")
    net = agent.build("actor_critic_mlp", seed=0)
    result = train(net, agent, TrainConfig(optimizer="adam", lr=3e-3, batch_size=8, iterations=250, eval_every=125),
                   seed=0, progress=False)
    assert result.history[0]["test_return"] < 60
    assert result.at_best("test_return") >= 150 > 6 * random_return


def test_imp_on_an_agent_runs_through_the_store(tmp_path):
    agent = rl.A2C("CartPole-v1", eval_episodes=2)
    config = TrainConfig(optimizer="adam", lr=3e-3, batch_size=4, iterations=20, eval_every=20)
    store = RunStore(tmp_path)
    runs = imp.run_seeds(agent, "actor_critic_mlp", config, [0, 1], rounds=2, fraction=0.5, scope="layer",
                         reset=make_reset("rewind", rewind_to=5), controls=("random",), store=store,
                         progress=False)
    for run in runs:
        masks = run.masks
        assert masks[2].is_subset_of(masks[1]) and masks[1].density == pytest.approx(0.5, abs=0.01)
        assert set(run.rounds[1].controls) == {"random"} and "test_return" in run.rounds[2].ticket.history[-1]
    entries = sorted(tmp_path.rglob("*.pt"))
    again = imp.run_seeds(agent, "actor_critic_mlp", config, [0, 1], rounds=2, fraction=0.5, scope="layer",
                          reset=make_reset("rewind", rewind_to=5), controls=("random",), store=store,
                          progress=False)
    assert sorted(tmp_path.rglob("*.pt")) == entries  # loaded, nothing trained again
    assert all(a == b for a, b in zip(again[1].masks, runs[1].masks))
    assert [r.ticket.final("test_return") for r in again[1].rounds] == [r.ticket.final("test_return")
                                                                        for r in runs[1].rounds]
