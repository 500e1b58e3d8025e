from django.apps import AppConfig


class SignalingConfig(AppConfig):
    name = "signaling"
    verbose_name = "Signaling"

    def ready(self) -> None:
        from signaling import notify  # noqa: F401  (connects the signal receivers)
        from signaling.http_sessions import on_sfu_event
        from signaling.sfu_gateway import gateway

        gateway.add_listener(on_sfu_event)
