<?php
/**
 * Test Connection, as the settings page runs it: the settings, the relay reachable, a signed
 * request accepted, the clocks, and whether this site can send in the background (its own
 * flush route). Each check is a result with what to do about it; nothing here is stored.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Runs the connection checks.
 */
final class UserRelay_Connection_Test {

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 */
	public function __construct( UserRelay_Settings $settings ) {
		$this->settings = $settings;
	}

	/**
	 * The connection checks: settings, relay reachable, signed request accepted, clock, loopback.
	 *
	 * @return array[] Each [ok|warn|fail, name, detail].
	 */
	public function run(): array {
		$problems = $this->settings->problems();
		if ( $problems ) {
			return array( array( 'fail', __( 'Settings', 'userrelay' ), implode( ' ', $problems ) ) );
		}
		$client = new UserRelay_Relay_Client( $this->settings );
		$checks = array();

		$started = microtime( true );
		$health  = $client->health();
		$elapsed = (int) round( ( microtime( true ) - $started ) * 1000 );
		if ( 200 === $health['status'] ) {
			/* translators: 1: URL, 2: milliseconds. */
			$checks[] = array( 'ok', __( 'Relay reachable', 'userrelay' ), sprintf( __( '%1$s/healthz answered 200 in %2$d ms.', 'userrelay' ), $this->settings->url(), $elapsed ) );
		} else {
			/* translators: 1: URL, 2: the error. */
			$checks[] = array( 'fail', __( 'Relay reachable', 'userrelay' ), sprintf( __( 'No healthy answer from %1$s/healthz: %2$s', 'userrelay' ), $this->settings->url(), self::describe( $health ) ) );
			return $checks; // Nothing further can work; do not blame the key for a network problem.
		}

		$probe = $client->probe();
		if ( 200 === $probe['status'] ) {
			/* translators: %s: site id. */
			$checks[] = array( 'ok', __( 'Signed request accepted', 'userrelay' ), sprintf( __( "The relay knows site '%s' and accepted this site's signature.", 'userrelay' ), $this->settings->site() ) );
		} else {
			$checks[] = array( 'fail', __( 'Signed request accepted', 'userrelay' ), self::describe( $probe ) );
		}

		$date = null !== $probe['date'] ? $probe['date'] : $health['date'];
		if ( null === $date ) {
			$checks[] = array( 'warn', __( 'Clock', 'userrelay' ), __( 'The relay sent no Date header to compare clocks with.', 'userrelay' ) );
		} else {
			$skew = time() - $date;
			/* translators: %d: seconds. */
			$detail   = sprintf( __( "This site's clock is %+d s from the relay's (signatures allow 300 s).", 'userrelay' ), $skew );
			$checks[] = array( abs( $skew ) <= 30 ? 'ok' : ( abs( $skew ) <= UserRelay_Facts::TIMESTAMP_TOLERANCE ? 'warn' : 'fail' ), __( 'Clock', 'userrelay' ), $detail );
		}

		$loopback = wp_remote_post(
			rest_url( UserRelay_Facts::REST_NAMESPACE . '/flush' ),
			array(
				'timeout'   => 15,
				'sslverify' => apply_filters( 'https_local_ssl_verify', false ),
				'body'      => array( 'token' => UserRelay_Outbox::flush_token() ),
			)
		);
		$status   = is_wp_error( $loopback ) ? 0 : (int) wp_remote_retrieve_response_code( $loopback );
		if ( 200 === $status ) {
			$checks[] = array( 'ok', __( 'Background sending', 'userrelay' ), __( 'This site reached its own flush route (changes are sent without making visitors wait).', 'userrelay' ) );
		} else {
			$why = is_wp_error( $loopback ) ? $loopback->get_error_message() : 'HTTP ' . $status;
			/* translators: 1: URL, 2: the error. */
			$checks[] = array( 'warn', __( 'Background sending', 'userrelay' ), sprintf( __( 'This site cannot reach %1$s (%2$s); changes will go out through WP-Cron only.', 'userrelay' ), rest_url( UserRelay_Facts::REST_NAMESPACE . '/flush' ), $why ) );
		}
		return $checks;
	}

	/**
	 * What an answer of the relay client says, for a person.
	 *
	 * @param array $answer An answer.
	 */
	private static function describe( array $answer ): string {
		if ( null === $answer['status'] ) {
			return (string) $answer['error'];
		}
		return 'HTTP ' . $answer['status'] . ': ' . UserRelay_Relay_Client::error_text( $answer );
	}
}
