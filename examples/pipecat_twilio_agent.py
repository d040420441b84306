"""A Pipecat bot for sipbridge's Twilio Media Streams mode.

The bot is written exactly as for Twilio (FastAPI WebSocket endpoint, Pipecat's
``FastAPIWebsocketTransport`` with ``TwilioFrameSerializer``); sipbridge speaks to it the
way Twilio would. The only Twilio-specific change: ``auto_hang_up=False``, since there is
no Twilio REST API to call. As written it echoes the caller's audio, so it runs without
any API key; the comments in ``run_bot`` show where speech-to-text, the LLM and
text-to-speech go.

Install: pip install "pipecat-ai[websocket]>=1.14"   (or pip install -e '.[pipecat]')
Run:     python examples/pipecat_twilio_agent.py --port 8766
Then:    sipbridge agent add pipecat-bot --url ws://127.0.0.1:8766/ws --protocol twilio
         sipbridge number add +12025550102 --agent pipecat-bot
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

# sipbridge's Twilio mode carries G.711 μ-law at 8 kHz; running the pipeline at the same
# rate saves resampling (STT and TTS services accept 8 kHz).
SAMPLE_RATE = 8000

app = FastAPI()


class Echo(FrameProcessor):
    """Stand-in for STT → LLM → TTS: plays the caller's audio back to them."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(
                OutputAudioRawFrame(frame.audio, frame.sample_rate, frame.num_channels)
            )
        else:
            await self.push_frame(frame, direction)


@app.websocket("/ws")
async def media_stream(websocket: WebSocket) -> None:
    await websocket.accept()
    # sipbridge sends Twilio's "connected" and "start"; Pipecat's helper reads them.
    transport_type, call_data = await parse_telephony_websocket(websocket)
    if transport_type != "twilio":
        logger.error(
            f"not a Twilio Media Stream ({transport_type}): is the agent --protocol twilio?"
        )
        await websocket.close()
        return
    # customParameters: "from"/"from_number" and "to"/"to_number" (E.164 when known),
    # every X- header of the INVITE, and the agent's own parameters.
    logger.info(f"call {call_data.call_id} from {call_data.from_number} to {call_data.to_number}")
    await run_bot(websocket, call_data.stream_id, call_data.call_id)


async def run_bot(websocket: WebSocket, stream_sid: str, call_sid: str) -> None:
    serializer = TwilioFrameSerializer(
        stream_sid=stream_sid,
        call_sid=call_sid,
        # No Twilio REST API behind sipbridge. To end the call, end the pipeline (the
        # WebSocket closes; sipbridge plays what it holds, then hangs up) or send the
        # extension event {"event": "hangup"} as an OutputTransportMessageFrame.
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )

    # A real bot puts its services here (each needs its own API key), for example:
    #
    #   from pipecat.audio.vad.silero import SileroVADAnalyzer
    #   from pipecat.processors.aggregators.llm_context import LLMContext
    #   from pipecat.processors.aggregators.llm_response_universal import (
    #       LLMContextAggregatorPair, LLMUserAggregatorParams)
    #   from pipecat.services.cartesia.tts import CartesiaTTSService
    #   from pipecat.services.deepgram.stt import DeepgramSTTService
    #   from pipecat.services.openai.llm import OpenAILLMService
    #
    #   stt = DeepgramSTTService(api_key=os.environ["DEEPGRAM_API_KEY"])
    #   llm = OpenAILLMService(api_key=os.environ["OPENAI_API_KEY"])
    #   tts = CartesiaTTSService(api_key=os.environ["CARTESIA_API_KEY"], voice_id="...")
    #   context = LLMContext([{"role": "system", "content": "You answer the phone ..."}])
    #   aggregators = LLMContextAggregatorPair(
    #       context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()))
    #
    # and the pipeline becomes
    #
    #   [transport.input(), stt, aggregators.user(), llm, tts, transport.output(),
    #    aggregators.assistant()]
    #
    # When the caller talks over the bot, Pipecat interrupts it: TwilioFrameSerializer
    # sends "clear" and sipbridge drops the reply it still holds within one 20 ms frame.
    pipeline = Pipeline([transport.input(), Echo(), transport.output()])

    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE),
    )

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport: object, _websocket: object) -> None:
        # The caller hung up: sipbridge sent "stop" and closed the WebSocket.
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)
