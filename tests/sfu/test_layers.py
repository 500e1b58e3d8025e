"""sfu.layers: the layer a viewer is sent, from its estimate (synthetic feedback)."""

from __future__ import annotations

from sfu.bandwidth import BandwidthEstimator, EstimatorSettings
from sfu.layers import LayerSelector, LayerState, Selection, SelectorSettings

# 180p, 360p, 720p
LAYERS = [LayerState(150_000, True), LayerState(500_000, True), LayerState(1_500_000, True)]
AUDIO = 40_000
SETTINGS = SelectorSettings()


def viewer(initial: float = 5_000_000) -> tuple[BandwidthEstimator, LayerSelector]:
    return BandwidthEstimator(EstimatorSettings(initial_bps=initial), 0.0), LayerSelector(
        SETTINGS, 0.0
    )


def test_starts_on_the_highest_layer_the_initial_estimate_fits() -> None:
    est, sel = viewer()
    assert sel.select(0.0, est, LAYERS, AUDIO).layer == 2
    est, sel = viewer(initial=600_000)
    assert sel.select(0.0, est, LAYERS, AUDIO).layer == 1


def test_steps_down_on_the_first_estimate_below_the_layer() -> None:
    est, sel = viewer()
    sel.select(0.0, est, LAYERS, AUDIO)
    est.sent(1_540_000)
    est.on_remb(2_000_000, now=0.5)
    est.on_remb(850_000, now=1.0)  # Chromium saw an overuse
    assert sel.select(1.0, est, LAYERS, AUDIO).layer == 1


def test_a_falling_remb_below_every_layer_without_loss_keeps_the_lowest() -> None:
    est, sel = viewer()
    sel.select(0.0, est, LAYERS, AUDIO)
    est.sent(1_540_000)
    est.on_remb(2_000_000, now=0.5)
    est.on_remb(120_000, now=1.0)  # a queue, maybe passing: nothing was lost
    assert sel.select(1.0, est, LAYERS, AUDIO).layer == 0


def test_pauses_when_not_even_the_lowest_layer_fits_and_resumes_after_a_probe() -> None:
    est, sel = viewer()
    sel.select(0.0, est, LAYERS, AUDIO)
    est.sent(1_540_000)
    est.on_remb(2_000_000, now=0.5)
    est.on_remb(120_000, now=1.0)
    # (the reports of the next loss_burst_quiet_seconds are about what was sent before)
    start = 1.0 + est.settings.loss_burst_quiet_seconds
    est.on_loss(0.6, now=start)  # the link drops what does not fit ...
    assert sel.select(start, est, LAYERS, AUDIO).layer == 0  # (one window may be bad luck)
    est.on_loss(0.6, now=start + 1)  # ... and goes on dropping it
    assert sel.select(start + 1, est, LAYERS, AUDIO).layer is None
    est.sent(AUDIO)
    # no probe before paused_probe_seconds
    assert sel.select(start + 2, est, LAYERS, AUDIO).probe is None
    now = start + 1 + SETTINGS.paused_probe_seconds
    # the link recovered: the first probe, no more than 1.5 times the estimate (the audio
    # goes through the same link), is taken without loss; the next ones follow at once, each
    # up to twice the last, until the lowest layer fits
    rates = []
    selection = sel.select(now, est, LAYERS, AUDIO)
    while selection.layer is None:
        assert selection.probe is not None
        assert selection.probe.layer == 0
        ratio = SETTINGS.probe_ratio_after_success if rates else SETTINGS.probe_ratio
        assert selection.probe.rate <= ratio * est.estimate
        rates.append(selection.probe.rate)
        # paused too, the sender report sent at its end came back on time: no queue
        now = selection.probe.until + SETTINGS.probe_settle_seconds
        est.on_probe_delay(0.0, now - 0.1)
        selection = sel.select(now, est, LAYERS, AUDIO)
        assert len(rates) < 8
    assert rates[-1] >= (LAYERS[0].bitrate + AUDIO) * (1 + SETTINGS.up_margin)
    assert selection.layer == 0


def _paused(est: BandwidthEstimator, sel: LayerSelector) -> float:
    """Pause the viewer (as above); the time its first probe is due."""
    sel.select(0.0, est, LAYERS, AUDIO)
    est.sent(1_540_000)
    est.on_remb(2_000_000, now=0.5)
    est.on_remb(120_000, now=1.0)
    start = 1.0 + est.settings.loss_burst_quiet_seconds
    est.on_loss(0.6, now=start)
    assert sel.select(start, est, LAYERS, AUDIO).layer == 0
    est.on_loss(0.6, now=start + 1)
    assert sel.select(start + 1, est, LAYERS, AUDIO).layer is None
    est.sent(AUDIO)
    return start + 1 + SETTINGS.paused_probe_seconds


def test_a_paused_probe_that_queues_at_the_link_fails() -> None:
    est, sel = viewer()
    now = _paused(est, sel)
    probe = sel.select(now, est, LAYERS, AUDIO).probe
    assert probe is not None
    before = est.estimate
    est.on_probe_delay(0.08, probe.until + 0.3)  # its sender report came back late
    selection = sel.select(probe.until + SETTINGS.probe_settle_seconds, est, LAYERS, AUDIO)
    assert (selection.layer, selection.probe, sel.probe) == (None, None, None)
    assert est.estimate == before


def test_a_paused_probe_without_its_delay_is_judged_by_loss_once_it_waited() -> None:
    est, sel = viewer()
    now = _paused(est, sel)
    probe = sel.select(now, est, LAYERS, AUDIO).probe
    assert probe is not None
    est.on_loss(0.0, probe.until + 0.2)
    # the answer to its sender report is waited for ...
    waiting = probe.until + SETTINGS.probe_settle_seconds
    assert sel.select(waiting, est, LAYERS, AUDIO) == Selection(None, None)
    assert sel.probe is probe
    # ... then loss and REMB decide: nothing lost, taken (and the next, higher, follows)
    later = sel.select(probe.until + SETTINGS.probe_delay_wait_seconds, est, LAYERS, AUDIO)
    assert est.estimate == probe.rate
    assert later.probe is not None
    assert later.probe.rate > probe.rate


def test_a_probe_that_meets_loss_fails_and_the_next_waits_longer() -> None:
    est, sel = viewer(initial=600_000)
    assert sel.select(0.0, est, LAYERS, AUDIO).layer == 1
    est.sent(540_000)
    probe = sel.select(SETTINGS.probe_backoff_seconds, est, LAYERS, AUDIO).probe
    assert probe is not None
    assert probe.layer == 2
    est.sent(probe.rate)
    est.on_loss(0.3, probe.started + 0.4)  # the link cannot take it
    selection = sel.select(probe.started + 0.4, est, LAYERS, AUDIO)
    assert selection.probe is None
    # the cut estimate still fits 360p? 1.76 M * 0.85 ≈ 1.5 M: yes
    assert selection.layer == 1
    assert sel.probe is None
    # the next probe waits twice as long
    first_wait = SETTINGS.probe_backoff_seconds
    assert sel.select(probe.started + 0.4 + first_wait, est, LAYERS, AUDIO).probe is None
    est.on_loss(0.0, probe.started + 5)
    later = probe.started + 0.4 + 2 * first_wait + SETTINGS.steady_seconds
    assert sel.select(later, est, LAYERS, AUDIO).probe is not None


def test_a_remb_that_follows_what_is_sent_neither_steps_down_nor_up_without_a_probe() -> None:
    est, sel = viewer(initial=600_000)
    sel.select(0.0, est, LAYERS, AUDIO)
    est.sent(540_000)
    probed = False
    for tenth in range(1, 100):
        now = tenth / 10
        est.on_remb(est.sent_bps * 1.5 + 10_000, now)
        est.on_loss(0.0, now)
        if sel.probe is not None and now > sel.probe.until:
            est.on_probe_delay(0.0, now)  # its sender report came back on time
        selection = sel.select(now, est, LAYERS, AUDIO)
        if selection.probe is not None:
            probed = True
            est.sent(selection.probe.rate)
        elif selection.layer == 2:
            est.sent(LAYERS[2].bitrate + AUDIO)
        assert selection.layer == 1 or (probed and selection.layer == 2)
    assert sel.layer == 2


def test_a_manual_choice_wins_and_falls_back_to_an_active_layer() -> None:
    est, sel = viewer(initial=100_000)
    assert sel.select(0.0, est, LAYERS, AUDIO, manual=2).layer == 2
    without_top = [*LAYERS[:2], LayerState(0, False)]
    assert sel.select(1.0, est, without_top, AUDIO, manual=2).layer == 1


def test_an_inactive_current_layer_is_left_for_one_that_fits() -> None:
    est, sel = viewer()
    sel.select(0.0, est, LAYERS, AUDIO)
    without_top = [*LAYERS[:2], LayerState(0, False)]
    assert sel.select(1.0, est, without_top, AUDIO).layer == 1


def test_a_probe_fails_on_a_falling_remb_even_one_above_the_estimate() -> None:
    # paused behind a starved link: the estimate was cut below what Chromium announces
    # after its overuse; a probe overflowing the link makes its REMB fall again
    est, sel = viewer(initial=600_000)
    sel.select(0.0, est, LAYERS, AUDIO)
    est.sent(540_000)
    second = 0.0
    while sel.select(second, est, LAYERS, AUDIO).layer is not None:
        second += 1
        est.on_loss(0.6, second)
        assert second < 10
    est.sent(AUDIO)
    est.on_remb(200_000, second + 0.5)
    now = second + SETTINGS.paused_probe_seconds
    probe = sel.select(now, est, LAYERS, AUDIO).probe
    assert probe is not None
    est.on_remb(150_000, now + 0.3)  # falling, though above what it is sent
    assert est.last_decrease_at < probe.started
    selection = sel.select(now + 0.3, est, LAYERS, AUDIO)
    assert selection.probe is None
    assert selection.layer is None
    assert est.estimate == probe.estimate_before


def test_a_probe_that_queues_up_at_the_bottleneck_fails_though_nothing_was_lost() -> None:
    est, sel = viewer(initial=600_000)
    assert sel.select(0.0, est, LAYERS, AUDIO).layer == 1
    est.sent(540_000)
    probe = sel.select(SETTINGS.probe_backoff_seconds, est, LAYERS, AUDIO).probe
    assert probe is not None
    est.on_loss(0.0, probe.until + 0.2)  # the link's queue took it all ...
    # ... and the sender report sent at its end came back 120 ms later than before
    est.on_probe_delay(0.12, probe.until + 0.3)
    selection = sel.select(probe.until + 0.3, est, LAYERS, AUDIO)
    assert (selection.layer, selection.probe, sel.probe) == (1, None, None)
    assert est.estimate < probe.rate
    # and the next waits twice as long
    later = probe.until + 0.3 + SETTINGS.probe_backoff_seconds
    assert sel.select(later, est, LAYERS, AUDIO).probe is None


def test_a_probe_whose_sender_report_came_back_in_time_succeeds_at_once() -> None:
    est, sel = viewer(initial=600_000)
    sel.select(0.0, est, LAYERS, AUDIO)
    est.sent(540_000)
    probe = sel.select(SETTINGS.probe_backoff_seconds, est, LAYERS, AUDIO).probe
    assert probe is not None
    est.on_probe_delay(0.01, probe.until + 0.2)
    now = probe.until + SETTINGS.probe_settle_seconds
    assert now < probe.until + SETTINGS.probe_delay_wait_seconds
    sel.select(now, est, LAYERS, AUDIO)
    assert est.estimate == probe.rate
    assert sel.probe is not None  # not enough for the top layer yet: the next, higher
    assert sel.probe.estimate_before == probe.rate


def test_a_flowing_videos_probe_without_its_delay_is_no_verdict_and_is_tried_again() -> None:
    est, sel = viewer(initial=600_000)
    sel.select(0.0, est, LAYERS, AUDIO)
    est.sent(540_000)
    probe = sel.select(SETTINGS.probe_backoff_seconds, est, LAYERS, AUDIO).probe
    assert probe is not None
    est.on_loss(0.0, probe.until + 0.1)  # nothing lost: a queue may have taken it all
    sel.select(probe.until + SETTINGS.probe_settle_seconds, est, LAYERS, AUDIO)
    assert sel.probe is probe  # waits for its delay
    given_up = probe.until + SETTINGS.probe_delay_wait_seconds
    assert sel.select(given_up, est, LAYERS, AUDIO) == Selection(1, None)
    assert est.estimate < probe.rate  # not raised to it
    # the next one after the same wait, not a longer one
    assert (
        sel.select(given_up + SETTINGS.probe_backoff_seconds - 0.01, est, LAYERS, AUDIO).probe
        is None
    )
    again = sel.select(given_up + SETTINGS.probe_backoff_seconds, est, LAYERS, AUDIO).probe
    assert again is not None
    assert again.layer == probe.layer


def test_a_layer_stepped_down_from_is_not_probed_again_until_the_hold_is_over() -> None:
    est, sel = viewer()
    sel.select(0.0, est, LAYERS, AUDIO)
    est.sent(1_540_000)
    fell = SETTINGS.fall_hold_after_seconds + 1.0  # sent for a while
    est.on_remb(2_000_000, now=fell - 0.5)
    est.on_remb(900_000, now=fell)  # a REMB well below the layer's need
    assert sel.select(fell, est, LAYERS, AUDIO).layer == 1
    est.sent(540_000)
    now = fell
    while now + 0.5 < fell + SETTINGS.fall_hold_seconds:
        now += 0.5
        est.on_loss(0.0, now)
        selection = sel.select(now, est, LAYERS, AUDIO)
        assert (selection.layer, selection.probe) == (1, None), now
    probe = sel.select(fell + SETTINGS.fall_hold_seconds, est, LAYERS, AUDIO).probe
    assert probe is not None
    assert probe.layer == 2


def test_a_layer_left_right_after_it_was_chosen_is_not_held() -> None:
    # 720p → 360p, and at once 360p → 180p: the second is about the first's burst
    est, sel = viewer()
    sel.select(0.0, est, LAYERS, AUDIO)
    est.sent(1_540_000)
    fell = SETTINGS.fall_hold_after_seconds + 1.0
    est.on_remb(2_000_000, now=fell - 0.5)
    est.on_remb(600_000, now=fell)
    assert sel.select(fell, est, LAYERS, AUDIO).layer == 1
    est.on_remb(450_000, now=fell + 0.2)
    assert sel.select(fell + 0.2, est, LAYERS, AUDIO).layer == 0
    est.sent(190_000)
    now = fell + 0.2
    while (probe := sel.select(now, est, LAYERS, AUDIO).probe) is None:
        now += 0.5
        est.on_loss(0.0, now)
        assert now < fell + SETTINGS.fall_hold_seconds / 2
    assert probe.layer == 1


def test_a_viewer_is_paused_only_once_the_lowest_layer_lost_too() -> None:
    est, sel = viewer()
    sel.select(0.0, est, LAYERS, AUDIO)
    est.sent(1_540_000)
    est.on_loss(0.7, 1.0)  # the top layer, through a link taking a fraction of it
    est.on_loss(0.7, 1.0 + est.settings.loss_burst_quiet_seconds)
    assert est.heavy_loss_windows >= SETTINGS.pause_loss_windows
    now = 1.0 + est.settings.loss_burst_quiet_seconds
    assert sel.select(now, est, LAYERS, AUDIO).layer == 0
    # now the lowest layer loses as much: the link takes less than it
    est.sent(AUDIO + LAYERS[0].bitrate)
    for second in (1, 2):
        est.on_loss(0.7, now + second)
    assert sel.select(now + 2, est, LAYERS, AUDIO).layer is None


def test_a_remb_falling_to_85_percent_of_what_the_layer_needs_does_not_step_down() -> None:
    # Chromium answers a delay spike (a keyframe burst) with 85 % of what it measured:
    # the link carried the layer
    est, sel = viewer()
    sel.select(0.0, est, LAYERS, AUDIO)
    need = LAYERS[2].bitrate + AUDIO
    est.sent(need)
    est.on_remb(2_000_000, now=0.5)
    est.on_remb(0.86 * need, now=1.0)
    assert sel.select(1.0, est, LAYERS, AUDIO).layer == 2
    est.on_remb(0.8 * need, now=1.5)
    assert sel.select(1.5, est, LAYERS, AUDIO).layer == 1


def test_after_a_probe_measured_the_link_the_next_goes_less_far_and_after_a_success_further() -> (
    None
):
    """A probe the link could not take, whose queue measured its rate, is followed by one
    at 1.3 x the estimate (its queue at that link: 0.15 s, not 0.25 s); a success by one at
    2 x, so a recovered link is found in few probes."""
    est, sel = viewer(initial=300_000)
    assert sel.select(0.0, est, LAYERS, AUDIO).layer == 0
    est.sent(190_000)
    now = SETTINGS.probe_backoff_seconds
    probe = sel.select(now, est, LAYERS, AUDIO).probe
    assert probe is not None
    assert probe.rate == SETTINGS.probe_ratio * 300_000
    est.probe_sent(probe.rate, SETTINGS.probe_seconds)
    est.on_probe_delay(0.25, probe.until + 0.3)
    now = probe.until + 0.3
    assert sel.select(now, est, LAYERS, AUDIO) == Selection(0, None)
    assert est.estimate == est.capacity == 300_000
    now += SETTINGS.probe_backoff_seconds * 2
    measured = sel.select(now, est, LAYERS, AUDIO).probe
    assert measured is not None
    assert measured.rate == SETTINGS.probe_ratio_measured * 300_000
    # the link recovered: this one passes, and the next goes twice as far
    est.on_probe_delay(0.01, measured.until + 0.2)
    sel.select(measured.until + SETTINGS.probe_settle_seconds, est, LAYERS, AUDIO)
    assert est.estimate == measured.rate
    assert sel.probe is not None
    assert sel.probe.rate == min(
        SETTINGS.probe_ratio_after_success * measured.rate,
        (LAYERS[2].bitrate + AUDIO) * (1 + SETTINGS.up_margin + SETTINGS.probe_over),
    )
