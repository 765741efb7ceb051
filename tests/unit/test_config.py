"""Specification of the configuration object: defaults, validation messages, immutability, masking, hash."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from selector.config import HORIZONS_S, MEASURES, Config, parse_config
from selector.errors import ConfigError, SelectorError
from selector.scores.base import measure_names

SASL = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "selector",
    "sasl_plain_password": "hunter2-very-secret",
}


def problems_of(data: dict[str, object]) -> list[str]:
    """The problem lines parse_config reports for ``data`` (the test fails if it does not raise)."""
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


class TestDefaults:
    def test_empty_mapping_is_a_valid_config(self) -> None:
        """No file and no overrides must give a working configuration."""
        assert isinstance(parse_config({}), Config)

    def test_none_is_the_same_as_an_empty_mapping(self) -> None:
        """An empty YAML file (None) must give exactly the defaults."""
        assert parse_config(None) == parse_config({})

    def test_default_values_satisfy_their_own_cross_checks(self) -> None:
        """Defaults must respect every cross-field rule (audit below rate, heartbeat below session)."""
        cfg = parse_config({})
        assert cfg.budget.audit_rate < cfg.budget.rate
        assert cfg.kafka.heartbeat_interval_ms < cfg.kafka.session_timeout_ms
        assert set(cfg.budget.caps) <= set(HORIZONS_S)

    def test_accept_thresholds_follow_class_order_with_default_fallback(self) -> None:
        """Per-class thresholds must be listed in class order, the default filling classes not named."""
        cfg = parse_config(
            {"classes": ["a", "b", "c"], "accept": {"default_threshold": 0.9, "thresholds": {"c": 0.7}}}
        )
        assert cfg.accept_thresholds() == [0.9, 0.9, 0.7]

    def test_every_configurable_measure_is_registered(self) -> None:
        """Every name 'scoring.measure' accepts must exist in the score registry (and vice versa)."""
        assert list(MEASURES) == measure_names()
        for name in MEASURES:
            cfg = parse_config({"scoring": {"measure": name}, "input": {"embedding_dim": 16}})
            assert cfg.scoring.measure == name

    def test_required_fields_follow_the_measures_in_use(self) -> None:
        """Each measure in use (deciding, weighted, density, cold start, diversity) requires its field."""
        cfg = parse_config(
            {
                "scoring": {"measure": "combination", "weights": {"bald": 1, "vote_entropy": 1, "margin": 1}},
                "input": {"embedding_dim": 8},
                "diversity": {"mode": "kcenter"},
            }
        )
        assert cfg.required_fields() == {
            "samples": "measure 'bald' (scoring)",
            "committee": "measure 'vote_entropy' (scoring)",
            "embedding": "'diversity.mode' kcenter",
        }
        assert parse_config({}).required_fields() == {}
        cold = parse_config({"scoring": {"cold_start_labels": 10}, "input": {"embedding_dim": 8}})
        assert cold.scoring.measures() == ["entropy", "novelty"]


class TestValidationMessages:
    def test_unknown_key_names_the_key_the_value_and_the_valid_keys(self) -> None:
        """A typo must fail loudly with the full key path and the keys that section accepts."""
        assert problems_of({"budget": {"rat": 2}}) == [
            "'budget.rat' is not a known key: 2 "
            "(valid keys: rate, controller, query_threshold, window_items, "
            "max_burst, caps, audit_rate, exploration, class_shares, segment_shares, seed)"
        ]

    def test_label_loop_settings_are_checked_against_each_other(self) -> None:
        """Drift watches audits, so it needs an audit rate; defect classes must be configured classes."""
        assert problems_of({"retrain": {"drift": True}, "budget": {"audit_rate": 0.0}}) == [
            "'retrain.drift' watches the confidence of audited items: it needs 'budget.audit_rate' > 0"
        ]
        assert problems_of({"dataset": {"defect_classes": ["rust"]}}) == [
            "'dataset.defect_classes' names classes not in 'classes': ['rust'] "
            "(classes: ['ok', 'scratch', 'dent', 'crack'])"
        ]
        assert parse_config({"dataset": {"defect_classes": ["crack"]}}).defects() == [
            False,
            False,
            False,
            True,
        ]
        assert parse_config({}).defects() == [False, True, True, True]

    def test_unknown_top_level_key_lists_the_sections(self) -> None:
        """An unknown section must list the top-level keys."""
        assert problems_of({"bugdet": {}}) == [
            "'bugdet' is not a known key: {} "
            "(valid keys: classes, topics, kafka, input, scoring, diversity, calibration, accept, budget, "
            "pending, dataset, quality, retrain, serve, label_studio, metrics)"
        ]

    def test_wrong_type_names_key_constraint_and_value(self) -> None:
        """A value of the wrong type must be reported with its key and the offending value."""
        assert problems_of({"budget": {"rate": "abc"}}) == [
            "'budget.rate': input should be a valid number: 'abc'"
        ]

    def test_rate_above_one_is_rejected_with_the_house_message(self) -> None:
        """The example message of STYLE.md must be produced verbatim."""
        assert problems_of({"budget": {"rate": 1.3}}) == ["'budget.rate' must be in (0, 1]: 1.3"]

    def test_rate_zero_is_rejected(self) -> None:
        """A zero budget is not a budget: (0, 1] excludes 0."""
        assert problems_of({"budget": {"rate": 0}}) == ["'budget.rate' must be in (0, 1]: 0"]

    def test_rate_one_is_allowed(self) -> None:
        """The interval is closed at 1 (label everything)."""
        assert parse_config({"budget": {"rate": 1.0}}).budget.rate == 1.0

    def test_empty_class_list_is_rejected(self) -> None:
        """At least two classes are needed for any informativeness measure to be defined."""
        assert problems_of({"classes": []}) == ["'classes' must list at least 2 class names: []"]

    def test_duplicate_classes_are_rejected(self) -> None:
        """A repeated class name would make per-class thresholds ambiguous."""
        assert problems_of({"classes": ["ok", "dent", "ok"]}) == [
            "'classes' must be non-empty names without repeats: ['ok', 'dent', 'ok']"
        ]

    def test_empty_class_name_is_rejected(self) -> None:
        """An empty class name could not be published as a label."""
        assert problems_of({"classes": ["ok", ""]}) == [
            "'classes' must be non-empty names without repeats: ['ok', '']"
        ]

    def test_threshold_for_unknown_class_is_rejected(self) -> None:
        """'accept.thresholds' naming a class not in 'classes' is a typo that must not pass silently."""
        assert problems_of({"classes": ["ok", "dent"], "accept": {"thresholds": {"dnet": 0.9}}}) == [
            "'accept.thresholds' names classes not in 'classes': ['dnet'] (classes: ['ok', 'dent'])"
        ]

    def test_threshold_outside_unit_interval_is_rejected(self) -> None:
        """An accept threshold is a probability."""
        assert problems_of({"accept": {"thresholds": {"ok": 1.5}}}) == [
            "'accept.thresholds.ok' must be in [0, 1]: 1.5"
        ]

    @pytest.mark.parametrize("audit_rate", [0.01, 0.5])
    def test_audit_rate_must_be_below_rate(self, audit_rate: float) -> None:
        """Audits are part of the budget, so their rate must be strictly below the total rate."""
        assert problems_of({"budget": {"rate": 0.01, "audit_rate": audit_rate}}) == [
            "'budget.audit_rate' must be below 'budget.rate' (audits are part of the budget): "
            f"{audit_rate} >= 0.01"
        ]

    def test_unknown_controller_is_rejected_listing_the_choices(self) -> None:
        """'budget.controller' names one of the registered controllers; anything else lists them."""
        assert problems_of({"budget": {"controller": "pid"}}) == [
            "'budget.controller': input should be 'quantile' or 'threshold': 'pid'"
        ]

    def test_class_share_for_unknown_class_is_rejected(self) -> None:
        """A reserved share for a class not in 'classes' would reserve budget nobody can spend."""
        assert problems_of({"classes": ["ok", "crack"], "budget": {"class_shares": {"crak": 0.3}}}) == [
            "'budget.class_shares' names classes not in 'classes': ['crak'] (classes: ['ok', 'crack'])"
        ]

    def test_shares_must_leave_part_of_the_budget_to_the_common_pool(self) -> None:
        """Reserved shares, exploration and audits together must stay below the whole budget."""
        budget = {"rate": 0.02, "audit_rate": 0.002, "exploration": 0.3, "class_shares": {"crack": 0.6}}
        assert problems_of({"budget": budget}) == [
            "'budget.class_shares', 'budget.segment_shares', 'budget.exploration' and "
            "'budget.audit_rate' / 'budget.rate' must leave part of the budget to the common pool: "
            "they add up to 1 >= 1"
        ]

    def test_a_share_is_a_fraction_below_one(self) -> None:
        """A single share of 1 would leave nothing to the rest: shares are in [0, 1)."""
        assert problems_of({"budget": {"segment_shares": {"line-1": 1.0}}}) == [
            "'budget.segment_shares.line-1' must be in [0, 1): 1.0"
        ]

    def test_pending_ttl_must_be_positive(self) -> None:
        """A pending item that expires at once would be asked about again immediately."""
        assert problems_of({"pending": {"ttl_s": 0}}) == ["'pending.ttl_s' must be > 0: 0"]

    def test_query_threshold_defaults_to_a_floor_of_zero(self) -> None:
        """'budget.query_threshold' is a floor under the quantile controller: 0 lets every score compete."""
        budget = parse_config({}).budget
        assert (budget.controller, budget.query_threshold) == ("quantile", 0.0)

    def test_negative_cap_is_rejected(self) -> None:
        """A cap is a count of labels; 0 is allowed (labels nothing), negative is not."""
        assert problems_of({"budget": {"caps": {"hour": -1}}}) == [
            "'budget.caps.hour': input should be greater than or equal to 0: -1"
        ]

    def test_unknown_horizon_is_rejected(self) -> None:
        """Caps exist only for the horizons the ledger knows."""
        assert problems_of({"budget": {"caps": {"week": 3}}}) == [
            "'budget.caps': input should be 'minute', 'hour' or 'day': 'week'"
        ]

    def test_unknown_measure_is_rejected_listing_the_choices(self) -> None:
        """A measure name outside the registry must fail, naming the valid ones."""
        (line,) = problems_of({"scoring": {"measure": "bold"}})
        assert line.startswith(
            "'scoring.measure' must be one of least_confidence, margin, ratio, entropy, bald,"
        )
        assert line.endswith("novelty or combination: 'bold'")
        (line,) = problems_of({"scoring": {"measure": "combination", "weights": {"bald": 1, "margn": 2}}})
        assert line.startswith("'scoring.weights' must be one of least_confidence,")
        assert line.endswith(": 'margn'")

    def test_combination_and_weights_go_together(self) -> None:
        """Weights without combination, or combination without weights, is a mistake worth stopping for."""
        assert problems_of({"scoring": {"measure": "combination"}}) == [
            "'scoring.weights' must name at least one measure when 'scoring.measure' is combination"
        ]
        assert problems_of({"scoring": {"weights": {"bald": 1.0}}}) == [
            "'scoring.weights' is used only when 'scoring.measure' is combination, not 'entropy'"
        ]
        assert problems_of({"scoring": {"measure": "combination", "weights": {"margin": 0}}}) == [
            "'scoring.weights.margin' must be > 0: 0"
        ]

    def test_embedding_users_need_the_embedding_length(self) -> None:
        """egl, density, novelty, cold start and diversity read embeddings: their length is required."""
        assert problems_of({"scoring": {"measure": "egl"}}) == [
            "'input.embedding_dim' (the length of your model's embeddings) is required by "
            "measure 'egl' (scoring)"
        ]
        assert problems_of({"diversity": {"mode": "kmeanspp"}}) == [
            "'input.embedding_dim' (the length of your model's embeddings) is required by "
            "'diversity.mode' kmeanspp"
        ]

    def test_embedding_memory_is_bounded(self) -> None:
        """Reservoir and core-set travel in every snapshot: too many long embeddings are refused."""
        assert problems_of({"scoring": {"measure": "novelty"}, "input": {"embedding_dim": 1024}}) == [
            "'scoring.reservoir_items' + 'scoring.coreset_items' in use keep 256 embeddings of 1024 numbers, "
            "1048576 bytes per partition snapshot, over 600000: lower them"
        ]
        assert parse_config({"scoring": {"measure": "egl"}, "input": {"embedding_dim": 1024}})

    def test_diversity_needs_the_quantile_controller(self) -> None:
        """The diversity step thins an over-selection that only the quantile controller makes."""
        assert problems_of(
            {
                "diversity": {"mode": "kcenter"},
                "input": {"embedding_dim": 4},
                "budget": {"controller": "threshold"},
            }
        ) == ["'diversity.mode' needs 'budget.controller' quantile (it over-selects by a quantile)"]

    def test_sasl_protocol_without_mechanism_is_rejected(self) -> None:
        """SASL without a mechanism cannot authenticate; the message must name the missing key."""
        assert problems_of({"kafka": {"security_protocol": "SASL_PLAINTEXT"}}) == [
            "'kafka.sasl_mechanism' is required when security_protocol is SASL_PLAINTEXT"
        ]

    def test_sasl_mechanism_without_credentials_is_rejected(self) -> None:
        """PLAIN/SCRAM need a username and a password."""
        assert problems_of({"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}}) == [
            "'kafka.sasl_plain_username' and 'kafka.sasl_plain_password' are required with SASL"
        ]

    def test_heartbeat_not_below_session_timeout_is_rejected(self) -> None:
        """A heartbeat as long as the session timeout would get the consumer evicted."""
        assert problems_of({"kafka": {"heartbeat_interval_ms": 10000, "session_timeout_ms": 10000}}) == [
            "'kafka.heartbeat_interval_ms' must be below 'kafka.session_timeout_ms': 10000 >= 10000"
        ]

    def test_port_out_of_range_is_rejected(self) -> None:
        """Ports are 16-bit."""
        assert problems_of({"metrics": {"port": 70000}}) == [
            "'metrics.port' must be a TCP port in [0, 65535] (0 picks a free port): 70000"
        ]

    def test_several_problems_are_reported_together(self) -> None:
        """Every problem of a file must be reported at once, not one per run."""
        problems = problems_of({"bogus": 1, "budget": {"rate": 2}, "metrics": {"port": -1}})
        assert sorted(problems) == sorted(
            [
                "'bogus' is not a known key: 1 "
                "(valid keys: classes, topics, kafka, input, scoring, diversity, calibration, accept, "
                "budget, pending, dataset, quality, retrain, serve, label_studio, metrics)",
                "'budget.rate' must be in (0, 1]: 2",
                "'metrics.port' must be a TCP port in [0, 65535] (0 picks a free port): -1",
            ]
        )

    def test_error_message_counts_and_lists_problems_with_source(self) -> None:
        """The exception text must name the source, count the problems and list each on its own line."""
        with pytest.raises(ConfigError) as info:
            parse_config({"budget": {"rate": 2, "max_burst": 0}}, source="prod.yaml")
        assert str(info.value) == (
            "invalid prod.yaml (2 problems):\n"
            "  - 'budget.rate' must be in (0, 1]: 2\n"
            "  - 'budget.max_burst' must be >= 1 (a label costs one token): 0"
        )
        assert info.value.source == "prod.yaml"

    def test_config_error_is_a_selector_error_wrapping_the_pydantic_error(self) -> None:
        """Errors derive from the single root and keep the foreign cause."""
        with pytest.raises(SelectorError) as info:
            parse_config({"budget": {"rate": 2}})
        assert isinstance(info.value.__cause__, ValidationError)


class TestImmutability:
    def test_assigning_a_field_raises(self) -> None:
        """The config is frozen: a component cannot change it behind the others' backs."""
        cfg = parse_config({})
        with pytest.raises(ValidationError):
            cfg.budget.rate = 0.5  # type: ignore[misc]
        assert cfg.budget.rate == 0.02

    def test_assigning_a_section_raises(self) -> None:
        """Sections are frozen too, not only leaves."""
        cfg = parse_config({})
        with pytest.raises(ValidationError):
            cfg.budget = cfg.budget  # type: ignore[misc]


class TestMasking:
    def test_password_is_masked(self) -> None:
        """masked() must replace the SASL password by ten asterisks."""
        cfg = parse_config({"kafka": SASL})
        assert cfg.masked()["kafka"]["sasl_plain_password"] == "**********"

    def test_secret_never_appears_in_the_masked_dump(self) -> None:
        """No rendering of the masked dump may contain the secret."""
        cfg = parse_config({"kafka": {**SASL, "ssl_password": "key-pass-123"}})
        dump = repr(cfg.masked())
        assert "hunter2-very-secret" not in dump
        assert "key-pass-123" not in dump
        assert cfg.masked()["kafka"]["ssl_password"] == "**********"

    def test_non_secrets_are_kept(self) -> None:
        """Masking must not hide what an operator needs to check."""
        masked = parse_config({"kafka": SASL}).masked()
        assert masked["kafka"]["sasl_plain_username"] == "selector"
        assert masked["budget"]["rate"] == 0.02

    def test_absent_secret_stays_none(self) -> None:
        """An unset secret is shown as unset, not as a fake mask."""
        assert parse_config({}).masked()["kafka"]["sasl_plain_password"] is None

    def test_secret_value_is_still_available_to_the_shell(self) -> None:
        """Masking is for display only: the client still gets the real password."""
        pw = parse_config({"kafka": SASL}).kafka.sasl_plain_password
        assert isinstance(pw, SecretStr)
        assert pw.get_secret_value() == "hunter2-very-secret"


class TestConfigHash:
    def test_hash_is_stable_across_parses(self) -> None:
        """The same settings must hash the same in every process (it is published with each decision)."""
        data = {"budget": {"rate": 0.05}, "classes": ["a", "b"]}
        assert parse_config(data).config_hash() == parse_config(dict(data)).config_hash()

    def test_hash_ignores_key_order(self) -> None:
        """Hashing is over the effective config, not the file's layout."""
        one = parse_config({"budget": {"rate": 0.05, "seed": 3}, "classes": ["a", "b"]})
        two = parse_config({"classes": ["a", "b"], "budget": {"seed": 3, "rate": 0.05}})
        assert one.config_hash() == two.config_hash()

    def test_hash_changes_when_a_value_changes(self) -> None:
        """A changed setting must be visible in the hash."""
        assert parse_config({}).config_hash() != parse_config({"budget": {"rate": 0.03}}).config_hash()

    def test_hash_is_short_hex(self) -> None:
        """Twelve hex digits, as shown in the to-label records."""
        h = parse_config({}).config_hash()
        assert len(h) == 12
        assert set(h) <= set("0123456789abcdef")


class TestStrictTypes:
    @pytest.mark.parametrize(
        ("data", "line"),
        [
            ({"budget": {"rate": True}}, "'budget.rate': input should be a valid number: True"),
            (
                {"budget": {"caps": {"hour": True}}},
                "'budget.caps.hour': input should be a valid integer: True",
            ),
            (
                {"budget": {"max_burst": 0.5}},
                "'budget.max_burst' must be >= 1 (a label costs one token): 0.5",
            ),
        ],
    )
    def test_booleans_are_not_numbers_and_a_burst_below_one_label_is_rejected(
        self, data: dict[str, object], line: str
    ) -> None:
        """YAML `yes` for a rate must not mean 'label everything'; a burst below 1 never queries."""
        assert problems_of(data) == [line]
