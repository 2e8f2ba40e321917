"""The one root exception of StreamPulse; every stage raises subclasses of it."""


class StreamPulseError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(StreamPulseError):
    """A setting is missing or wrong; the message names the setting to fix."""


class InvalidMessage(StreamPulseError):
    """A message that cannot be processed; it goes to the dead-letter topic with this reason."""


class EngineUnavailable(StreamPulseError):
    """A sentiment engine could not be loaded (model missing, offline, ...)."""


class BusError(StreamPulseError):
    """The message broker cannot be reached, or a sent message was not acknowledged."""


class StageStopped(StreamPulseError):
    """A stop was requested (SIGTERM/SIGINT) while a stage was waiting or retrying."""
