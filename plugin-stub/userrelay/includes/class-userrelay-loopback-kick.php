<?php
/**
 * The loopback kick: how a request that is not served by PHP-FPM gets the outbox sent after its
 * answer. send() writes a POST carrying the flush token to this site's home page on a socket
 * and hangs up; serve() answers that POST once plugins are loaded, flushes briefly and ends the
 * request. Which request may kick (one kick in flight, a claim in the options table) is the
 * outbox's to decide (UserRelay_Outbox::claim_kick); this class only carries the kick.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Sends and serves the loopback kick.
 */
final class UserRelay_Loopback_Kick {

	/** The body field of a loopback kick: the flush token. */
	const FIELD = 'userrelay_flush';

	/**
	 * The outbox it flushes.
	 *
	 * @var UserRelay_Outbox
	 */
	private $outbox;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Outbox $outbox The outbox it flushes.
	 */
	public function __construct( UserRelay_Outbox $outbox ) {
		$this->outbox = $outbox;
	}

	/**
	 * Asks this site, without waiting for the answer, to run a flush: writes the request on a
	 * socket and hangs up. Not wp_remote_post( 'blocking' => false ): on WordPress's cURL
	 * transport that still reads the whole answer (Requests enforces a timeout of at least 1 s),
	 * measured at 800 ms against an endpoint taking 800 ms. The request goes to the home page
	 * with the flush token in its body; serve() answers it once plugins are loaded, before
	 * the theme, init and the REST API (a flush costs a third of a full boot), and ignores the
	 * hang-up.
	 */
	public function send(): void {
		$url   = wp_parse_url( home_url( '/' ) );
		$https = isset( $url['scheme'] ) && 'https' === $url['scheme'];
		$host  = isset( $url['host'] ) ? $url['host'] : '';
		$port  = isset( $url['port'] ) ? (int) $url['port'] : ( $https ? 443 : 80 );
		$path  = ( isset( $url['path'] ) ? $url['path'] : '/' ) . ( isset( $url['query'] ) ? '?' . $url['query'] : '' );
		if ( '' === $host ) {
			$this->outbox->release_kick();
			return;
		}
		$context = stream_context_create(
			array(
				'ssl' => array(
					// Our own site over loopback, as core's loopbacks (https_local_ssl_verify).
					'verify_peer'      => (bool) apply_filters( 'https_local_ssl_verify', false ),
					'verify_peer_name' => (bool) apply_filters( 'https_local_ssl_verify', false ),
					'peer_name'        => $host,
				),
			)
		);
		$socket  = @stream_socket_client( ( $https ? 'ssl://' : 'tcp://' ) . $host . ':' . $port, $errno, $errstr, 1.0, STREAM_CLIENT_CONNECT, $context ); // phpcs:ignore Generic.PHP.NoSilencedErrors.Discouraged -- A failure only delays sending until WP-Cron.
		if ( false === $socket ) {
			$this->outbox->release_kick(); // Sent later: by the next request's kick or WP-Cron.
			return;
		}
		$body = http_build_query( array( self::FIELD => UserRelay_Outbox::flush_token() ) );
		$head = "POST {$path} HTTP/1.1\r\nHost: {$host}" . ( isset( $url['port'] ) ? ':' . $port : '' ) . "\r\n"
			. "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " . strlen( $body ) . "\r\n"
			. 'User-Agent: UserRelay-Plugin/' . USERRELAY_PLUGIN_VERSION . "\r\nConnection: close\r\n\r\n";
		fwrite( $socket, $head . $body );
		fclose( $socket );
	}

	/**
	 * On 'plugins_loaded' (priority 0): when this request is our own loopback kick (a POST with
	 * the flush token), sends what is due, briefly, and ends the request there. Its own
	 * 'shutdown' still runs, so rows left due are kicked again (UserRelay_Hooks::on_shutdown).
	 * Any other request goes on untouched.
	 */
	public function serve(): void {
		// No nonce: the flush token authenticates the kick, and it is only compared, never stored.
		if ( ! isset( $_POST[ self::FIELD ] ) || ! is_string( $_POST[ self::FIELD ] )
			|| ! hash_equals( UserRelay_Outbox::flush_token(), $_POST[ self::FIELD ] ) ) {
			return;
		}
		ignore_user_abort( true ); // The kicking request hung up at once; carry on regardless.
		try {
			$this->outbox->flush( UserRelay_Outbox::BACKGROUND_BUDGET );
		} finally {
			$this->outbox->release_kick();
		}
		status_header( 204 );
		exit;
	}
}
