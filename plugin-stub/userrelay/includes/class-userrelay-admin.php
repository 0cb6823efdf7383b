<?php
/**
 * Settings → UserRelay: the relay URL, site id and key (where no constant sets them), Test
 * Connection (its checks: UserRelay_Connection_Test), what the relay says of this site
 * (UserRelay_Relay_View), and the state of the outbox with a Send now button.
 *
 * On a multisite network the page is Network Admin → Settings → UserRelay instead, for
 * manage_network_options only: a sub-site's admin neither sees nor sets the key (the settings
 * are site options there, see UserRelay_Settings). Each blog of the network is a site of its
 * own at the relay: the page lists the blogs and edits one at a time (UserRelay_Admin_Blogs:
 * ?blog=N, the primary blog by default), every form and check running switched to that blog.
 * Every form posts to admin-post.php and is checked for that capability and its own nonce;
 * input is unslashed and sanitized, output escaped. The key is never printed: only a mask of it.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The settings page.
 */
final class UserRelay_Admin {

	const PAGE = 'userrelay';

	/** Who may configure the plugin: a site's administrators; on a network, its admins only. */
	const CAPABILITY         = 'manage_options';
	const NETWORK_CAPABILITY = 'manage_network_options';

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Outbox.
	 *
	 * @var UserRelay_Outbox
	 */
	private $outbox;

	/**
	 * On a network, which blog the page and its forms are about.
	 *
	 * @var UserRelay_Admin_Blogs
	 */
	private $blogs;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 * @param UserRelay_Outbox   $outbox   Outbox.
	 */
	public function __construct( UserRelay_Settings $settings, UserRelay_Outbox $outbox ) {
		$this->settings = $settings;
		$this->outbox   = $outbox;
		$this->blogs    = new UserRelay_Admin_Blogs( $settings );
	}

	/**
	 * Adds the page and the form handlers.
	 */
	public function register(): void {
		add_action( is_multisite() ? 'network_admin_menu' : 'admin_menu', array( $this, 'add_page' ) );
		add_action( 'admin_post_userrelay_save', array( $this, 'handle_save' ) );
		add_action( 'admin_post_userrelay_test', array( $this, 'handle_test' ) );
		add_action( 'admin_post_userrelay_send', array( $this, 'handle_send' ) );
	}

	/**
	 * Adds Settings → UserRelay.
	 */
	public function add_page(): void {
		if ( is_multisite() ) {
			add_submenu_page( 'settings.php', __( 'UserRelay', 'userrelay' ), __( 'UserRelay', 'userrelay' ), self::NETWORK_CAPABILITY, self::PAGE, array( $this, 'render' ) );
			return;
		}
		add_options_page( __( 'UserRelay', 'userrelay' ), __( 'UserRelay', 'userrelay' ), self::CAPABILITY, self::PAGE, array( $this, 'render' ) );
	}

	/**
	 * The capability that configures the plugin here.
	 */
	private static function capability(): string {
		return is_multisite() ? self::NETWORK_CAPABILITY : self::CAPABILITY;
	}

	/**
	 * Saves the settings that no constant sets.
	 */
	public function handle_save(): void {
		$this->authorize( 'userrelay_save' );
		$blog  = $this->blogs->switch_to_chosen();
		$notes = array();
		if ( ! $this->settings->is_constant( 'USERRELAY_URL' ) && isset( $_POST['userrelay_url'] ) ) {
			$url     = trim( sanitize_text_field( wp_unslash( $_POST['userrelay_url'] ) ) );
			$problem = '' === $url ? null : UserRelay_Settings::url_problem( $url );
			if ( null === $problem ) {
				$this->settings->save( 'USERRELAY_URL', esc_url_raw( $url, array( 'http', 'https' ) ) );
			} else {
				$notes[] = array( 'error', $problem . ' ' . __( 'The relay URL was not saved.', 'userrelay' ) );
			}
		}
		if ( ! $this->settings->is_constant( 'USERRELAY_SITE' ) && isset( $_POST['userrelay_site'] ) ) {
			$this->settings->save( 'USERRELAY_SITE', sanitize_key( wp_unslash( $_POST['userrelay_site'] ) ) );
		}
		if ( ! $this->settings->is_constant( 'USERRELAY_KEY' ) && isset( $_POST['userrelay_key'] ) ) {
			$key = trim( sanitize_text_field( wp_unslash( $_POST['userrelay_key'] ) ) );
			if ( '' !== $key ) { // Blank keeps the saved key.
				$problem = UserRelay_Settings::key_problem( $key );
				if ( null === $problem ) {
					$this->settings->save( 'USERRELAY_KEY', $key );
				} else {
					$notes[] = array( 'error', $problem . ' ' . __( 'The key was not saved.', 'userrelay' ) );
				}
			}
		}
		if ( is_multisite() ) {
			// What network activation did for the main site only: the blog's tables, ids and
			// WP-Cron schedule, before anything is reported to it.
			UserRelay_Plugin::activate();
		}
		$this->outbox->retry_now(); // Settings may have fixed what held the outbox; this request's end sends it.
		$notes[] = $notes ? array( 'warning', __( 'The other settings were saved.', 'userrelay' ) ) : array( 'success', __( 'Settings saved.', 'userrelay' ) );
		$this->finish( array( 'notes' => $notes ), $blog );
	}

	/**
	 * Test Connection: each check with its result.
	 */
	public function handle_test(): void {
		$this->authorize( 'userrelay_test' );
		$blog = $this->blogs->switch_to_chosen();
		$this->finish( array( 'checks' => ( new UserRelay_Connection_Test( $this->settings ) )->run() ), $blog );
	}

	/**
	 * Send now: makes the outbox due and sends it while the admin waits (at most ~10 s).
	 */
	public function handle_send(): void {
		$this->authorize( 'userrelay_send' );
		$blog = $this->blogs->switch_to_chosen();
		$this->outbox->retry_now();
		$result = $this->outbox->flush( 10 );
		$head   = $this->outbox->head();
		/* translators: 1: events sent, 2: events waiting. */
		$text  = sprintf( __( 'Sent %1$d event(s); %2$d waiting.', 'userrelay' ), $result['sent'], $result['remaining'] );
		$level = 'success';
		if ( $result['busy'] ) {
			$text .= ' ' . __( 'Another flush was running; it carries on.', 'userrelay' );
		} elseif ( $head && $head->last_error ) {
			$text .= ' ' . __( 'Last error:', 'userrelay' ) . ' ' . $head->last_error;
			$level = 'error';
		}
		$this->finish( array( 'notes' => array( array( $level, $text ) ) ), $blog );
	}

	/**
	 * Renders the page.
	 */
	public function render(): void {
		if ( ! current_user_can( self::capability() ) ) {
			return;
		}
		$flash = get_transient( $this->flash_key() );
		delete_transient( $this->flash_key() );
		$flash = is_array( $flash ) ? $flash : array();
		echo '<div class="wrap"><h1>' . esc_html__( 'UserRelay', 'userrelay' ) . '</h1>';
		if ( is_multisite() ) {
			$this->blogs->switch_to_chosen();
			$this->blogs->render();
		}
		foreach ( isset( $flash['notes'] ) ? $flash['notes'] : array() as $note ) {
			printf( '<div class="notice notice-%s"><p>%s</p></div>', esc_attr( $note[0] ), esc_html( $note[1] ) );
		}

		echo '<form method="post" action="' . esc_url( admin_url( 'admin-post.php' ) ) . '"><input type="hidden" name="action" value="userrelay_save">' . UserRelay_Admin_Blogs::field(); // phpcs:ignore WordPress.Security.EscapeOutput.OutputNotEscaped -- field() escapes.
		wp_nonce_field( 'userrelay_save' );
		echo '<table class="form-table" role="presentation">';
		$this->field_row( 'USERRELAY_URL', 'userrelay_url', __( 'Relay URL', 'userrelay' ), $this->settings->url(), 'url', 'http://127.0.0.1:8480' );
		$this->field_row( 'USERRELAY_SITE', 'userrelay_site', __( 'Site id at the relay', 'userrelay' ), $this->settings->site(), 'text', 'shop' );
		$this->field_row( 'USERRELAY_KEY', 'userrelay_key', __( 'Key', 'userrelay' ), $this->settings->key(), 'password', 'whsec_…' );
		$reassign = $this->settings->delete_reassign();
		$policies = array(
			'USERRELAY_SYNC_PRIVILEGED' => $this->settings->sync_privileged() ? __( 'yes: privileged users (administrators and any role that can manage the site, its users or its code) are sent and may be changed, and deliveries may give privileged roles', 'userrelay' ) : __( 'no (default): privileged users (administrators and any role that can manage the site, its users or its code) are neither sent nor changed, and no delivery gives a privileged role', 'userrelay' ),
			/* translators: %d: user id. */
			'USERRELAY_DELETE_REASSIGN' => null === $reassign ? __( 'not set (default): a user who owns posts is not deleted; the relay is told why', 'userrelay' ) : ( 'delete' === $reassign ? __( "'delete': posts are deleted with the user", 'userrelay' ) : sprintf( __( 'posts go to user %d', 'userrelay' ), $reassign ) ),
			'USERRELAY_META_DENY'       => __( 'Never synced: capabilities and user levels of every blog, session tokens, application passwords, per-screen settings, UserRelay\'s own keys, and any key that is not printable ASCII.', 'userrelay' ) . ( $this->settings->meta_deny_patterns() ? ' ' . __( 'Also denied here:', 'userrelay' ) . ' ' . implode( ', ', $this->settings->meta_deny_patterns() ) : '' ),
		);
		foreach ( $policies as $constant => $text ) {
			printf( '<tr><th scope="row"><code>%s</code></th><td>%s</td></tr>', esc_html( $constant ), esc_html( $text ) );
		}
		echo '</table>';
		submit_button( __( 'Save settings', 'userrelay' ) );
		echo '</form>';

		echo '<h2>' . esc_html__( 'Test Connection', 'userrelay' ) . '</h2>';
		if ( isset( $flash['checks'] ) ) {
			echo '<table class="widefat striped" style="max-width:60em"><tbody>';
			$labels = array(
				'ok'   => __( 'OK', 'userrelay' ),
				'warn' => __( 'Warning', 'userrelay' ),
				'fail' => __( 'Failed', 'userrelay' ),
			);
			foreach ( $flash['checks'] as $check ) {
				printf( '<tr><td><strong>%s</strong></td><td>%s</td><td>%s</td></tr>', esc_html( $labels[ $check[0] ] ), esc_html( $check[1] ), esc_html( $check[2] ) );
			}
			echo '</tbody></table>';
		}
		$this->button_form( 'userrelay_test', __( 'Test Connection', 'userrelay' ) );

		echo '<h2>' . esc_html__( 'At the relay', 'userrelay' ) . '</h2>';
		( new UserRelay_Relay_View( $this->settings ) )->render();

		echo '<h2>' . esc_html__( 'Outbox', 'userrelay' ) . '</h2>';
		if ( is_multisite() && ! get_option( UserRelay_Plugin::OPTION_DB_VERSION ) ) {
			// A blog never connected has no outbox yet: saving its settings makes one.
			echo '<p>' . esc_html__( 'This site is not connected yet: it has no outbox.', 'userrelay' ) . '</p>';
		} else {
			$this->render_outbox();
			$this->button_form( 'userrelay_send', __( 'Send now', 'userrelay' ) );
		}
		echo '</div>';
		if ( is_multisite() ) {
			restore_current_blog();
		}
	}

	/**
	 * The outbox's state: what waits, what holds it, what went out last.
	 */
	private function render_outbox(): void {
		$count  = $this->outbox->count();
		$head   = $this->outbox->head();
		$status = UserRelay_Outbox::status();
		$lines  = array();
		/* translators: %d: number of events. */
		$lines[] = sprintf( _n( '%d event waiting to be sent.', '%d events waiting to be sent.', $count, 'userrelay' ), $count );
		if ( $head ) {
			/* translators: 1: event id, 2: age. */
			$lines[] = sprintf( __( 'Oldest: %1$s, made %2$s ago.', 'userrelay' ), UserRelay_Outbox::event_id( $head ), human_time_diff( (int) $head->created_at ) );
			if ( (int) $head->attempts > 0 ) {
				$wait = (int) $head->next_attempt_at - time();
				/* translators: 1: attempts, 2: seconds. */
				$lines[] = sprintf( __( 'Failed %1$d time(s); next attempt in %2$d s.', 'userrelay' ), (int) $head->attempts, max( 0, $wait ) );
				$lines[] = __( 'Last error:', 'userrelay' ) . ' ' . $head->last_error;
			}
		}
		if ( ! empty( $status['last_sent_at'] ) ) {
			/* translators: 1: number of events, 2: time ago. */
			$lines[] = sprintf( __( 'Last batch accepted by the relay: %1$d event(s), %2$s ago.', 'userrelay' ), (int) $status['last_sent_count'], human_time_diff( (int) $status['last_sent_at'] ) );
		}
		foreach ( $lines as $line ) {
			echo '<p>' . esc_html( $line ) . '</p>';
		}
	}

	/**
	 * One setting's row: an input, or the constant's value (the key masked) when one is set.
	 *
	 * @param string $constant    The overriding constant.
	 * @param string $name        The option and input name.
	 * @param string $label       Label.
	 * @param string $value       Current value.
	 * @param string $type        Input type.
	 * @param string $placeholder Placeholder.
	 */
	private function field_row( string $constant, string $name, string $label, string $value, string $type, string $placeholder ): void {
		$is_key = 'userrelay_key' === $name;
		$shown  = $is_key && '' !== $value ? UserRelay_Settings::mask_key( $value ) : $value;
		printf( '<tr><th scope="row"><label for="%s">%s</label></th><td>', esc_attr( $name ), esc_html( $label ) );
		if ( $this->settings->is_constant( $constant ) ) {
			/* translators: %s: constant name. */
			printf( '<code>%s</code><p class="description">%s</p>', esc_html( $shown ), esc_html( sprintf( __( 'Set in wp-config.php (%s).', 'userrelay' ), $constant ) ) );
		} else {
			printf(
				'<input type="%s" id="%s" name="%s" value="%s" placeholder="%s" class="regular-text" autocomplete="off">',
				esc_attr( $type ),
				esc_attr( $name ),
				esc_attr( $name ),
				esc_attr( $is_key ? '' : $value ),
				esc_attr( $placeholder )
			);
			if ( $is_key && '' !== $value ) {
				/* translators: %s: masked key. */
				printf( '<p class="description">%s</p>', esc_html( sprintf( __( 'Saved: %s. Leave blank to keep it.', 'userrelay' ), $shown ) ) );
			}
		}
		echo '</td></tr>';
	}

	/**
	 * A form with one nonce-protected button.
	 *
	 * @param string $action admin-post action (and nonce action).
	 * @param string $label  Button label.
	 */
	private function button_form( string $action, string $label ): void {
		echo '<form method="post" action="' . esc_url( admin_url( 'admin-post.php' ) ) . '"><input type="hidden" name="action" value="' . esc_attr( $action ) . '">' . UserRelay_Admin_Blogs::field(); // phpcs:ignore WordPress.Security.EscapeOutput.OutputNotEscaped -- field() escapes.
		wp_nonce_field( $action );
		submit_button( $label, 'secondary', 'submit', false );
		echo '</form>';
	}

	/**
	 * Stops unless the user may manage options and the nonce of this form is valid.
	 *
	 * @param string $action Nonce action.
	 */
	private function authorize( string $action ): void {
		if ( ! current_user_can( self::capability() ) ) {
			wp_die( esc_html__( 'You are not allowed to change UserRelay settings.', 'userrelay' ), '', array( 'response' => 403 ) );
		}
		check_admin_referer( $action );
	}

	/**
	 * Keeps what to show for the page's next load (this user only), then goes back to it.
	 *
	 * @param array $flash Notes and check results.
	 * @param int   $blog  On a network, the blog the form was about (switched to): shown again.
	 */
	private function finish( array $flash, int $blog = 0 ): void {
		if ( is_multisite() ) {
			restore_current_blog(); // The flash is kept where the page reads it, before switching.
		}
		set_transient( $this->flash_key(), $flash, 5 * MINUTE_IN_SECONDS );
		wp_safe_redirect( is_multisite() ? network_admin_url( 'settings.php?page=' . self::PAGE . '&blog=' . $blog ) : admin_url( 'options-general.php?page=' . self::PAGE ) );
		exit;
	}

	/**
	 * The transient holding this user's flash.
	 */
	private function flash_key(): string {
		return 'userrelay_flash_' . get_current_user_id();
	}
}
